//! The end-to-end chart suite (tests/e2e/chart) installs the stand-in Flagger Canary CRD from
//! a checked-in YAML file; this keeps that file equal to `Canary::crd()`.
//! `HERALD_UPDATE_FIXTURES=1 cargo test -p herald-api --test canary_crd_fixture` rewrites it.

use std::path::PathBuf;

use herald_api::flagger::Canary;
use kube::CustomResourceExt;

#[test]
fn canary_crd_fixture_matches_the_rust_type() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/e2e/chart/fixtures/canaries.flagger.app.yaml");
    let expected = herald_api::crd_yaml(&Canary::crd());
    if std::env::var_os("HERALD_UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let on_disk =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        on_disk == expected,
        "{} is out of date: run HERALD_UPDATE_FIXTURES=1 cargo test -p herald-api --test canary_crd_fixture",
        path.display()
    );
}
