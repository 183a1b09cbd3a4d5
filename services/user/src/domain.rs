//! The user, and the valid forms of what callers send. Parse, don't validate: a handler
//! turns a request into one of these types once (collecting every bad field), and
//! nothing past that point sees a raw, unchecked string.

use meshwork::error::{ApiError, FieldViolations};
use meshwork_proto::user::v1 as pb;
use uuid::Uuid;

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: UserName,
    pub email: Email,
    /// Microseconds since the Unix epoch.
    pub create_time: i64,
    pub update_time: i64,
}

impl User {
    /// A user as the store reads it back. Its fields were parsed before they were written,
    /// so they are not parsed again: a rule made stricter later must not make stored users
    /// unreadable.
    pub fn from_stored(id: String, name: String, email: String, create_time: i64, update_time: i64) -> Self {
        Self {
            id: UserId(id),
            name: UserName(name),
            email: Email(email),
            create_time,
            update_time,
        }
    }
}

impl From<User> for pb::User {
    fn from(user: User) -> Self {
        Self {
            id: user.id.0,
            name: user.name.0,
            email: user.email.0,
            create_time: Some(meshwork::time::timestamp(user.create_time)),
            update_time: Some(meshwork::time::timestamp(user.update_time)),
        }
    }
}

/// A display name: 1 to 256 characters, not only spaces, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    const MAX_CHARS: usize = 256;

    pub fn parse(name: String) -> Result<Self, String> {
        if name.trim().is_empty() {
            return Err("must not be empty".into());
        }
        // Bytes first (a character is at most 4): a huge name is refused without counting.
        if name.len() > 4 * Self::MAX_CHARS || name.chars().count() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        if name.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address, lower-cased so that uniqueness ignores case.
///
/// Deliberately simple (one `@`, a dot in the domain, no spaces, at most 254 characters as
/// RFC 5321 allows): the only real test of an address is sending mail to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    const MAX_CHARS: usize = 254;

    pub fn parse(email: String) -> Result<Self, String> {
        if email.is_empty() {
            return Err("must not be empty".into());
        }
        if email.len() > 4 * Self::MAX_CHARS || email.chars().count() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        let well_formed = match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            None => false,
        };
        if !well_formed {
            return Err("must be an email address like name@example.com".into());
        }
        Ok(Self(email.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user id. The server chooses them ([`UserId::generate`]); callers' ids are opaque: any
/// non-empty string up to 128 bytes is a valid question, and an unknown one is NOT_FOUND,
/// not INVALID_ARGUMENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId(String);

impl UserId {
    /// A new id: a UUIDv7, unique without coordination and ordered by creation time, which
    /// is what pagination by id needs.
    pub fn generate() -> Self {
        Self(Uuid::now_v7().to_string())
    }

    pub fn parse(id: String) -> Result<Self, String> {
        match id.len() {
            0 => Err("must not be empty".into()),
            129.. => Err("must be at most 128 bytes".into()),
            // PostgreSQL refuses NUL in text: refused here, the same on either backend.
            _ if id.chars().any(char::is_control) => Err("must not contain control characters".into()),
            _ => Ok(Self(id)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A valid CreateUser request.
#[derive(Debug)]
pub struct NewUser {
    pub name: UserName,
    pub email: Email,
}

impl TryFrom<pb::CreateUserRequest> for NewUser {
    type Error = ApiError;

    fn try_from(request: pb::CreateUserRequest) -> Result<Self, ApiError> {
        let mut violations = FieldViolations::new();
        let name = violations.check("name", UserName::parse(request.name));
        let email = violations.check("email", Email::parse(request.email));
        let (name, email) = violations.finish((name, email))?;
        Ok(Self { name, email })
    }
}

/// The most paths an `update_mask` may name (there are only two fields, and `*`).
const MAX_MASK_PATHS: usize = 10;

/// A valid UpdateUser request: which user, and the new value of each field to change.
#[derive(Debug)]
pub struct UserChanges {
    pub id: UserId,
    pub name: Option<UserName>,
    pub email: Option<Email>,
}

impl TryFrom<pb::UpdateUserRequest> for UserChanges {
    type Error = ApiError;

    /// The fields to change are the `update_mask` paths (`*` means all of them); without a
    /// mask, every field the caller populated (AIP-134).
    fn try_from(request: pb::UpdateUserRequest) -> Result<Self, ApiError> {
        let Some(user) = request.user else {
            return Err(ApiError::invalid_field("user", "is required"));
        };
        let mut violations = FieldViolations::new();
        let id = violations.check("user.id", UserId::parse(user.id));
        let paths = request.update_mask.map(|mask| mask.paths).unwrap_or_default();
        // Decided before looking at any path: a mask of 50,000 paths costs one comparison.
        if paths.len() > MAX_MASK_PATHS {
            violations.add(
                "update_mask.paths",
                format!("must name at most {MAX_MASK_PATHS} fields"),
            );
            return Err(ApiError::InvalidArgument(violations));
        }

        let (mut change_name, mut change_email) = (false, false);
        if paths.is_empty() {
            change_name = !user.name.is_empty();
            change_email = !user.email.is_empty();
            if !change_name && !change_email {
                violations.add("user", "sets no field to change");
            }
        }
        for (i, path) in paths.iter().enumerate() {
            match path.as_str() {
                "name" => change_name = true,
                "email" => change_email = true,
                "*" => (change_name, change_email) = (true, true),
                other => violations.add(
                    format!("update_mask.paths[{i}]"),
                    format!(
                        "unknown field {:?}; expected \"name\" or \"email\"",
                        other.chars().take(32).collect::<String>()
                    ),
                ),
            }
        }
        // `None`: the field is not changed (`Option<Checked<_>>` turned into `Checked<Option<_>>`).
        let name = change_name.then(|| violations.check("user.name", UserName::parse(user.name)));
        let email = change_email.then(|| violations.check("user.email", Email::parse(user.email)));
        let (id, name, email) = violations.finish((id, name.transpose(), email.transpose()))?;
        Ok(Self { id, name, email })
    }
}

#[cfg(test)]
mod tests {
    use prost_types::FieldMask;

    use super::*;

    fn bad_fields(error: ApiError) -> Vec<String> {
        match error {
            ApiError::InvalidArgument(violations) => violations.fields().map(str::to_owned).collect(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn emails_are_checked_and_lower_cased() {
        assert_eq!(
            Email::parse("Ada@Example.COM".into()).unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "a@b@c.com",
        ] {
            assert!(Email::parse(bad.into()).is_err(), "{bad:?} should be refused");
        }
        assert!(Email::parse(format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn names_must_have_content_and_bounded_length() {
        assert!(UserName::parse("Ada Lovelace".into()).is_ok());
        assert!(UserName::parse("   ".into()).is_err());
        assert!(UserName::parse("x".repeat(257)).is_err());
        assert!(UserName::parse("a\u{0}b".into()).is_err());
    }

    #[test]
    fn create_reports_every_bad_field_at_once() {
        let request = pb::CreateUserRequest {
            name: String::new(),
            email: "nope".into(),
        };
        assert_eq!(
            bad_fields(NewUser::try_from(request).unwrap_err()),
            ["name", "email"]
        );
    }

    fn update(name: &str, email: &str, mask: Option<&[&str]>) -> Result<UserChanges, ApiError> {
        UserChanges::try_from(pb::UpdateUserRequest {
            user: Some(pb::User {
                id: "u1".into(),
                name: name.into(),
                email: email.into(),
                ..Default::default()
            }),
            update_mask: mask.map(|paths| FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        })
    }

    #[test]
    fn update_without_mask_changes_populated_fields_only() {
        let changes = update("Ada", "", None).unwrap();
        assert_eq!(changes.name.unwrap().as_str(), "Ada");
        assert!(changes.email.is_none());
    }

    #[test]
    fn update_with_mask_validates_the_named_fields_by_their_request_path() {
        assert_eq!(
            bad_fields(update("Ada", "bad", Some(&["email"])).unwrap_err()),
            ["user.email"]
        );
        assert_eq!(
            bad_fields(update("Ada", "", Some(&["name", "age"])).unwrap_err()),
            ["update_mask.paths[1]"]
        );
        let changes = update("Ada", "ada@example.com", Some(&["name"])).unwrap();
        assert!(changes.email.is_none(), "a field outside the mask is not changed");
    }

    #[test]
    fn ids_with_control_characters_are_refused() {
        assert!(UserId::parse("u\u{0}1".into()).is_err());
        assert!(UserId::parse("u\n1".into()).is_err());
        assert!(UserId::parse("u-1".into()).is_ok());
    }

    #[test]
    fn a_mask_of_more_than_ten_paths_is_refused_before_any_is_read() {
        let many: Vec<&str> = std::iter::repeat_n("nope", 50_000).collect();
        assert_eq!(
            bad_fields(update("Ada", "", Some(&many)).unwrap_err()),
            ["update_mask.paths"]
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any name and email are parsed or refused, never a panic; what is accepted is
            /// within the limits and free of control characters.
            #[test]
            fn any_create_user_is_parsed_or_refused_within_limits(name in "\\PC{0,300}", email in "\\PC{0,300}") {
                match NewUser::try_from(pb::CreateUserRequest { name, email }) {
                    Ok(user) => {
                        prop_assert!(user.name.as_str().chars().count() <= 256);
                        prop_assert!(!user.name.as_str().chars().any(char::is_control));
                        prop_assert!(user.email.as_str().chars().count() <= 254);
                        prop_assert!(user.email.as_str().contains('@'));
                    }
                    Err(ApiError::InvalidArgument(violations)) => prop_assert!(violations.fields().count() <= 2),
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
            }

            #[test]
            fn any_update_mask_is_parsed_or_refused(paths in proptest::collection::vec("\\PC{0,20}", 0..30)) {
                let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
                if let Err(error) = update("Ada", "ada@example.com", Some(&refs)) {
                    let ApiError::InvalidArgument(violations) = error else {
                        return Err(TestCaseError::fail("only INVALID_ARGUMENT"));
                    };
                    prop_assert!(violations.fields().count() <= 20);
                }
            }
        }
    }
}
