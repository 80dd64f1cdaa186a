//! Herald's pure core: the event model, policy validation and matching, templating and
//! payload building. No I/O: everything here is a function of its inputs, so it is
//! unit-tested and benchmarked without a network or a cluster.

#[cfg(feature = "bench-fixtures")]
pub mod bench_fixtures;
pub mod dedup;
pub mod escape;
pub mod event;
pub mod gates;
mod labels;
pub mod loader;
pub mod policy;
pub mod receivers;
pub mod repeats;
pub mod secret;
pub mod template;
mod unclosed_block;

pub use escape::Markup;
pub(crate) use event::json_error_reason;
pub use event::{CanaryFacts, EventError, FlaggerEvent, Severity};
pub use loader::{load_documents, load_sources, Document, LoadProblem, Loaded, Origin};
pub use policy::{
    MatchInput, Notification, PolicyId, PolicyObject, PolicySet, PolicySetBuilder, Problem, Reason,
    RenderFailure,
};
pub use receivers::ReceiverKind;
pub use secret::{Redacted, SecretError, SecretSource, SecretStore};
