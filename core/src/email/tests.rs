use super::*;

fn parsed(raw: &str) -> (String, String) {
    match EmailAddress::parse(raw) {
        Ok(e) => (e.local().to_owned(), e.domain().to_owned()),
        Err(error) => panic!("{raw:?} refused: {error}"),
    }
}

#[test]
fn plain_addresses_are_parsed_and_lower_cased() {
    assert_eq!(
        parsed("alice@example.com"),
        ("alice".into(), "example.com".into())
    );
    assert_eq!(
        parsed("Alice.Smith+Tag@Mail.Example.COM"),
        ("alice.smith+tag".into(), "mail.example.com".into())
    );
    assert_eq!(
        parsed("o'brien@x-y.example"),
        ("o'brien".into(), "x-y.example".into())
    );
    assert_eq!(
        parsed("a_b-c=d~e@ex4mple.io"),
        ("a_b-c=d~e".into(), "ex4mple.io".into())
    );
    let long_local = "a".repeat(MAX_LOCAL_LEN);
    assert!(EmailAddress::parse(&format!("{long_local}@example.com")).is_ok());
}

#[test]
fn ambiguous_addresses_are_refused() {
    use EmailError::*;
    let cases: &[(&str, EmailError)] = &[
        // Two (or no) `@`: which domain did the provider mean?
        ("someone@evil.test@example.com", NotOneAt),
        ("someone@example.com@evil.test", NotOneAt),
        ("@@example.com", NotOneAt),
        ("alice.example.com", NotOneAt),
        ("", NotOneAt),
        // Quoted local parts and comments.
        ("\"someone@evil.test\"@example.com", NotOneAt),
        ("\"alice\"@example.com", LocalCharacter),
        ("alice(comment)@example.com", LocalCharacter),
        ("alice@example.com(comment)", Domain(DomainError::Character)),
        // Routing.
        ("alice%evil.test@example.com", LocalCharacter),
        ("evil.test!alice@example.com", LocalCharacter),
        ("@evil.test:alice@example.com", NotOneAt),
        // Empty parts.
        ("@example.com", LocalLength),
        ("alice@", Domain(DomainError::Length)),
        // Dots.
        (".alice@example.com", LocalDot),
        ("alice.@example.com", LocalDot),
        ("al..ice@example.com", LocalDot),
        ("alice@example.com.", Domain(DomainError::TrailingDot)),
        ("alice@.example.com", Domain(DomainError::Label)),
        ("alice@example..com", Domain(DomainError::Label)),
        ("alice@localhost", Domain(DomainError::SingleLabel)),
        // Domain syntax.
        ("alice@-example.com", Domain(DomainError::Label)),
        ("alice@example-.com", Domain(DomainError::Label)),
        ("alice@exa_mple.com", Domain(DomainError::Character)),
        ("alice@[127.0.0.1]", Domain(DomainError::Character)),
        ("alice@example.com:443", Domain(DomainError::Character)),
        // Whitespace and control characters.
        ("alice @example.com", LocalCharacter),
        (" alice@example.com", LocalCharacter),
        ("alice@example.com ", Domain(DomainError::Character)),
        ("alice@exa mple.com", Domain(DomainError::Character)),
        ("alice\r\n@example.com", LocalCharacter),
        (
            "alice@example.com\r\nX-Injected: 1",
            Domain(DomainError::Character),
        ),
        ("alice\0@example.com", LocalCharacter),
        ("alice\t@example.com", LocalCharacter),
        // Unicode look-alikes: fullwidth @, Cyrillic letters, fullwidth dot, NFKC tricks.
        ("someone\u{ff20}evil.test@example.com", LocalCharacter),
        ("alice@ex\u{0430}mple.com", Domain(DomainError::Character)),
        ("\u{0430}lice@example.com", LocalCharacter),
        ("alice@example\u{ff0e}com", Domain(DomainError::Character)),
        ("alice@example.com\u{200b}", Domain(DomainError::Character)),
        (
            "alice@xn--exmple-cua.com\u{ff0e}",
            Domain(DomainError::Character),
        ),
        // Separators that would split a header value.
        ("alice,bob@example.com", LocalCharacter),
        ("alice;bob@example.com", LocalCharacter),
        ("<alice@example.com>", LocalCharacter),
    ];
    for (raw, expected) in cases {
        assert_eq!(EmailAddress::parse(raw), Err(*expected), "{raw:?}");
    }
    let long_local = "a".repeat(MAX_LOCAL_LEN + 1);
    assert_eq!(
        EmailAddress::parse(&format!("{long_local}@example.com")),
        Err(LocalLength)
    );
    let long = format!("a@{}.com", "b".repeat(MAX_EMAIL_LEN));
    assert_eq!(EmailAddress::parse(&long), Err(TooLong));
    let long_label = format!("a@{}.com", "b".repeat(64));
    assert_eq!(
        EmailAddress::parse(&long_label),
        Err(Domain(DomainError::Label))
    );
}

#[test]
fn the_domain_is_the_one_after_the_only_at() {
    let email = EmailAddress::parse("Someone@Evil.Example.COM").expect("valid");
    assert_eq!(email.domain(), "evil.example.com");
    assert_eq!(email.as_str(), "someone@evil.example.com");
    assert_eq!(email.to_string(), "someone@evil.example.com");
}

#[test]
fn mail_domains_are_checked_like_address_domains() {
    assert_eq!(mail_domain("Example.COM"), Ok("example.com".into()));
    for bad in [
        "",
        "example.com.",
        "@example.com",
        "example",
        "exa mple.com",
        "*.example.com",
    ] {
        assert!(mail_domain(bad).is_err(), "{bad:?}");
    }
}
