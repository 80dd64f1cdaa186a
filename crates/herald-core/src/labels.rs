//! Kubernetes label keys, checked the way the API server checks them (apimachinery's
//! `IsQualifiedName`). A `matchLabels` key no object can carry would make its policy match
//! nothing, silently; and the CRD cannot check map keys (structural schemas have no
//! `propertyNames`), so policy validation does.

const NAME_MAX: usize = 63;
const PREFIX_MAX: usize = 253;

/// Why `key` is not a valid label key, or `None` when it is one.
pub(crate) fn label_key_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let why = if let Some(prefix) = prefix.filter(|p| !is_dns_subdomain(p)) {
        format!(
            "the prefix {prefix:?} is not a DNS subdomain (lower-case letters, digits, '-' and '.', at most {PREFIX_MAX} characters)"
        )
    } else if !is_label_name(name) {
        format!(
            "the name {name:?} must be 1 to {NAME_MAX} letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    } else {
        return None;
    };
    Some(format!("{key:?} is not a valid label key: {why}"))
}

fn is_label_name(name: &str) -> bool {
    let alphanumeric_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name.len() <= NAME_MAX
        && alphanumeric_ends
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(prefix: &str) -> bool {
    prefix.len() <= PREFIX_MAX
        && prefix.split('.').all(|part| {
            part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::label_key_error;

    #[test]
    fn kubernetes_label_keys_are_accepted() {
        for key in [
            "app",
            "App_1.x-y",
            "app.kubernetes.io/name",
            "example.com/team",
            "a",
            &"x".repeat(63),
            &format!("{}/n", "a".repeat(253)),
        ] {
            assert_eq!(label_key_error(key), None, "{key}");
        }
    }

    #[test]
    fn what_the_api_server_refuses_is_refused() {
        for key in [
            "",
            "bad key",
            "-app",
            "app-",
            "team/",
            "/team",
            "Example.com/team",
            "a..b/team",
            "a/b/c",
            "ünicode",
            &"x".repeat(64),
            &format!("{}/n", "a".repeat(254)),
        ] {
            assert!(label_key_error(key).is_some(), "{key:?} was accepted");
        }
    }
}
