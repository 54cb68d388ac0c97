use super::*;

fn ok(raw: &str) -> String {
    match CanonicalPath::parse(raw) {
        Ok(path) => path.0,
        Err(error) => panic!("{raw} refused: {error}"),
    }
}

#[test]
fn plain_paths_are_kept() {
    for raw in [
        "/",
        "/wordpress",
        "/wordpress/",
        "/a/b.c/d~e",
        "/api/v1:batch",
        "/@me",
    ] {
        assert_eq!(ok(raw), raw);
    }
}

#[test]
fn unreserved_escapes_are_decoded_others_upper_cased() {
    assert_eq!(ok("/%77ordpress"), "/wordpress");
    assert_eq!(ok("/a%20b"), "/a%20b");
    assert_eq!(ok("/a%2a"), "/a%2A");
    assert_eq!(ok("/caf%C3%A9"), "/caf%C3%A9");
}

#[test]
fn ambiguous_paths_are_refused() {
    use PathError::*;
    let cases = [
        ("", NotAbsolute),
        ("wordpress", NotAbsolute),
        ("/wordpress/../admin", DotSegment),
        ("/wordpress/./admin", DotSegment),
        ("/..", DotSegment),
        ("/%2e%2e/admin", DotSegment),
        ("/%2E/admin", DotSegment),
        ("/.%2e/admin", DotSegment),
        ("/wordpress/..;/admin", Parameter),
        ("/wordpress/.;x/admin", Parameter),
        ("/admin;x=1/users", Parameter),
        ("/wordpress%2fadmin", EncodedDelimiter),
        ("/wordpress%2Fadmin", EncodedDelimiter),
        ("/a%5cb", EncodedDelimiter),
        ("/a%23b", EncodedDelimiter),
        ("/a%3fb", EncodedDelimiter),
        ("//admin", EmptySegment),
        ("/a//b", EmptySegment),
        ("/a\\b", Backslash),
        ("/a%00b", ControlCharacter),
        ("/a%0d%0ab", ControlCharacter),
        ("/a\u{1}b", ControlCharacter),
        ("/a%zz", BadEscape),
        ("/a%4", BadEscape),
        ("/a b", UnencodedCharacter),
        ("/a\"b", UnencodedCharacter),
        ("/é", UnencodedCharacter),
        ("/%ff%fe", NotUtf8),
    ];
    for (raw, expected) in cases {
        assert_eq!(CanonicalPath::parse(raw), Err(expected), "{raw:?}");
    }
    assert_eq!(
        CanonicalPath::parse(&"/a".repeat(MAX_PATH_LEN)),
        Err(PathError::TooLong)
    );
}

#[test]
fn prefixes_match_whole_segments_ignoring_case() {
    let path = |raw| CanonicalPath::parse(raw).expect("valid");
    assert!(path("/wordpress").starts_with_segments("/wordpress"));
    assert!(path("/wordpress/").starts_with_segments("/wordpress"));
    assert!(path("/wordpress/wp-admin").starts_with_segments("/wordpress"));
    assert!(path("/WordPress/wp-admin").starts_with_segments("/wordpress"));
    assert!(!path("/wordpress2").starts_with_segments("/wordpress"));
    assert!(!path("/word").starts_with_segments("/wordpress"));
    assert!(path("/anything").starts_with_segments("/"));
}

#[test]
fn what_a_second_decoder_or_normalizer_would_read_differently_is_refused() {
    use PathError::*;
    let cases = [
        // Encoded `;`: servlet containers strip `;parameters` after decoding.
        ("/public/%3B/../admin", EncodedDelimiter),
        ("/public%3bx/admin", EncodedDelimiter),
        ("/admin%3B.css", EncodedDelimiter),
        // Double encoding, in every spelling of the second escape.
        ("/public/%252e%252e/admin", DoubleEncoding),
        ("/public/..%252fadmin", DoubleEncoding),
        ("/public/%252E%252E%252Fadmin", DoubleEncoding),
        ("/public/%25%32%65%25%32%65/admin", DoubleEncoding),
        ("/public/%255cadmin", DoubleEncoding),
        ("/public%253Badmin", DoubleEncoding),
        ("/public/%25u002e%25u002e/admin", DoubleEncoding),
        ("/public/%2525252e", DoubleEncoding),
        // NFKC and best-fit folding into separators and dots.
        ("/public/%EF%BC%8F..%EF%BC%8Fadmin", FoldsToAscii), // U+FF0F
        ("/public%E2%88%95admin", FoldsToAscii),             // U+2215
        ("/public/%EF%BC%8E%EF%BC%8E/admin", FoldsToAscii),  // U+FF0E
        ("/public/%EF%B9%92%EF%B9%92/admin", FoldsToAscii),  // U+FE52
        ("/public/%E2%80%A4%E2%80%A4/admin", FoldsToAscii),  // U+2024
        ("/public/%E2%80%A5/admin", FoldsToAscii),           // U+2025 ".."
        ("/public%EF%BC%BCadmin", FoldsToAscii),             // U+FF3C
        ("/public%EF%B9%A8admin", FoldsToAscii),             // U+FE68
        ("/public%EF%BC%9Badmin", FoldsToAscii),             // U+FF1B
        ("/public%EF%BC%85%32e", FoldsToAscii),              // U+FF05
        ("/public%E2%81%84admin", FoldsToAscii),             // U+2044
        ("/%EF%BD%81dmin", FoldsToAscii),                    // U+FF41 fullwidth a
        ("/%E2%84%AAey", FoldsToAscii),                      // U+212A Kelvin sign
        // Overlong UTF-8 for `.` and `/` is not UTF-8.
        ("/public/%C0%AE%C0%AE/admin", NotUtf8),
        ("/public%C0%AFadmin", NotUtf8),
        ("/public%E0%80%AFadmin", NotUtf8),
        // IIS `%u` escapes are not escapes.
        ("/public/%u002e%u002e/admin", BadEscape),
    ];
    for (raw, expected) in cases {
        assert_eq!(CanonicalPath::parse(raw), Err(expected), "{raw:?}");
    }
}

#[test]
fn a_literal_percent_and_letters_from_other_scripts_are_kept() {
    // `%25` not followed by an escape is a literal `%`, read the same once or twice decoded.
    assert_eq!(ok("/100%25"), "/100%25");
    assert_eq!(ok("/100%25-off"), "/100%25-off");
    assert_eq!(ok("/%D0%B6%E4%B8%AD"), "/%D0%B6%E4%B8%AD");
    assert_eq!(
        CanonicalPath::parse("/%EF%BC%A1dmin"), // fullwidth A: a normalizing backend reads /Admin
        Err(PathError::FoldsToAscii)
    );
}
