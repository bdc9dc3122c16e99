//! Picking apart image references.

/// The tag of an image reference: `docker.io/a/b:1.0` gives `1.0`, a reference
/// without a tag gives `latest`. A digest suffix (`@sha256:…`) is ignored.
pub fn tag_of(reference: &str) -> &str {
    let without_digest = reference
        .split_once('@')
        .map_or(reference, |(name, _)| name);
    let last_component = without_digest
        .rsplit_once('/')
        .map_or(without_digest, |(_, last)| last);
    match last_component.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag,
        _ => "latest",
    }
}

#[cfg(test)]
mod tests {
    use super::tag_of;

    #[test]
    fn tags() {
        assert_eq!(tag_of("docker.io/wasmrunner/hello:latest"), "latest");
        assert_eq!(tag_of("hello:v1.2"), "v1.2");
        assert_eq!(tag_of("localhost:5000/hello"), "latest");
        assert_eq!(tag_of("localhost:5000/hello:dev"), "dev");
        assert_eq!(tag_of("hello"), "latest");
        assert_eq!(tag_of("hello:1@sha256:abcd"), "1");
    }
}
