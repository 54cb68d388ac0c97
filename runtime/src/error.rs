//! Errors as log text.

/// The message of an error and of every error in its `source()` chain, on one line joined by
/// `": "`, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);
    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn every_source_joins_the_line() {
        let error = Outer(Middle(std::io::Error::other("inner")));
        assert_eq!(super::error_chain(&error), "outer: middle: inner");
        assert_eq!(super::error_chain(&std::io::Error::other("alone")), "alone");
    }
}
