//! Label keys and values, validated as Kubernetes validates them (so that
//! imported policies and pod labels round-trip), plus Cilium's optional
//! source prefix on keys (`k8s:app`, `any:app`).

/// Why a key is invalid, or `None` when it is valid.
pub fn key_problem(key: &str) -> Option<String> {
    // Optional `source:` prefix, as in Cilium (`k8s:`, `any:`, `reserved:`).
    let key = match key.split_once(':') {
        Some((source, rest))
            if !source.is_empty() && source.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) =>
        {
            rest
        }
        Some(_) => return Some("a `:` may only follow a lowercase source prefix such as `k8s:`".into()),
        None => key,
    };
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() || prefix.len() > 253 {
            return Some("the prefix before `/` must be a DNS subdomain of 1 to 253 characters".into());
        }
        let ok = prefix.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
        if !ok {
            return Some(format!("the prefix `{prefix}` is not a lowercase DNS subdomain"));
        }
    }
    name_problem(name, "name").map(|p| format!("the key {p}"))
}

/// Why a value is invalid, or `None` when it is valid. Values may be empty.
pub fn value_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    name_problem(value, "value").map(|p| format!("the value {p}"))
}

fn name_problem(name: &str, what: &str) -> Option<String> {
    if name.is_empty() {
        return Some(format!("{what} is empty"));
    }
    if name.len() > 63 {
        return Some(format!("is {} characters long; at most 63 are allowed", name.len()));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Some(format!("contains `{bad}`; only letters, digits, `-`, `_` and `.` are allowed"));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Some("must begin and end with a letter or digit".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(key_problem("app"), None);
        assert_eq!(key_problem("app.kubernetes.io/name"), None);
        assert_eq!(key_problem("k8s:io.kubernetes.pod.namespace"), None);
        assert!(key_problem("-app").is_some());
        assert!(key_problem("Bad.Prefix/app").is_some());
        assert!(key_problem("K8S:app").is_some());
        assert!(key_problem(&"a".repeat(64)).is_some());
    }

    #[test]
    fn values() {
        assert_eq!(value_problem(""), None);
        assert_eq!(value_problem("v1.2_3-x"), None);
        assert!(value_problem("web!").is_some());
        assert!(value_problem("a/b").is_some());
        assert!(value_problem("-a").is_some());
    }
}
