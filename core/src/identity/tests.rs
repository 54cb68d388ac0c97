use super::*;

fn check(subject: &str, email: Option<&str>, groups: &[&str]) -> Result<Identity, ClaimError> {
    Identity::checked(
        subject.to_owned(),
        email,
        groups.iter().map(|g| (*g).to_owned()).collect(),
        serde_json::Map::new(),
    )
}

#[test]
fn ordinary_claims_pass_and_the_email_is_normalized() {
    let identity = check(
        "CiQ0OGE5-x_y|z",
        Some("Alice@Example.COM"),
        &["eng", "a,b", "é"],
    )
    .expect("valid");
    assert_eq!(identity.email.as_deref(), Some("alice@example.com"));
    assert_eq!(identity.groups, ["eng", "a,b", "é"]);
    assert!(check(&"s".repeat(MAX_SUBJECT_LEN), None, &[]).is_ok());
}

#[test]
fn subjects_that_cannot_be_sent_verbatim_are_refused() {
    for subject in [
        "",
        "alice\r\nx-auth-request-user: admin",
        "alice\n",
        "alice\0",
        "alice\t",
        "alice bob",
        " alice",
        "\u{7f}",
        "ali\u{00e9}",
        "\u{202e}nimda",
    ] {
        assert_eq!(
            check(subject, None, &[]),
            Err(ClaimError::Subject),
            "{subject:?}"
        );
    }
    assert_eq!(
        check(&"s".repeat(MAX_SUBJECT_LEN + 1), None, &[]),
        Err(ClaimError::Subject)
    );
}

#[test]
fn an_email_that_does_not_parse_strictly_is_refused() {
    for email in [
        "someone@evil.test@example.com",
        "alice@example.com\r\n",
        "alice@example.com.",
        "\"a\"@example.com",
        "",
    ] {
        assert!(
            matches!(check("alice", Some(email), &[]), Err(ClaimError::Email(_))),
            "{email:?}"
        );
    }
}

#[test]
fn oversized_identities_are_refused_with_their_size() {
    let group = "g".repeat(100);
    let groups: Vec<&str> = std::iter::repeat_n(group.as_str(), 100).collect();
    let error = check("alice", None, &groups).expect_err("10 KB of groups");
    assert!(matches!(error, ClaimError::TooLarge { size } if size > 10_000));
    assert_eq!(error.category(), "claims_too_large");
    assert_eq!(check("alice", None, &[""]), Err(ClaimError::EmptyGroup));
}
