//! The Kubernetes name rules (DNS-1123) an event's canary and namespace must follow: an event
//! for a name Kubernetes would refuse cannot be about a real Canary.

/// A DNS-1123 label (Kubernetes namespace names): at most 63 characters, lowercase letters,
/// digits and `-`, starting and ending with a letter or digit.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    const MAX: usize = 63;
    if name.len() > MAX {
        return Err(format!("{} characters, at most {MAX} allowed", name.len()));
    }
    let bytes = name.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if let Some(&bad) = bytes.iter().find(|&&b| !(alnum(b) || b == b'-')) {
        return Err(format!(
            "{:?} is not allowed (lowercase letters, digits and '-' only)",
            char::from(bad)
        ));
    }
    if !bytes.first().is_some_and(|&b| alnum(b)) || !bytes.last().is_some_and(|&b| alnum(b)) {
        return Err("must start and end with a lowercase letter or digit".to_owned());
    }
    Ok(())
}

/// A DNS-1123 subdomain (the names of Kubernetes objects, Canaries included): at most 253
/// characters, dot-separated DNS-1123 labels.
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    const MAX: usize = 253;
    if name.len() > MAX {
        return Err(format!("{} characters, at most {MAX} allowed", name.len()));
    }
    for part in name.split('.') {
        if part.is_empty() {
            return Err("empty part between dots".to_owned());
        }
        // Each part follows the label rules; the 63-character limit applies to the whole.
        let bytes = part.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if let Some(&bad) = bytes.iter().find(|&&b| !(alnum(b) || b == b'-')) {
            return Err(format!(
                "{:?} is not allowed (lowercase letters, digits, '-' and '.' only)",
                char::from(bad)
            ));
        }
        if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return Err(
                "each dot-separated part must start and end with a lowercase letter or digit"
                    .to_owned(),
            );
        }
    }
    Ok(())
}
