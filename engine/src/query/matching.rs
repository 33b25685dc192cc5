//! Attribute matching of PS3.4 section C.2.2.2, as pure functions on text values.
//!
//! Stored values arrive as UTF-8 text with several values separated by
//! backslashes (numbers as their decimal text). An entity matches a key when
//! any one of its values matches. An absent or empty stored value matches only
//! universal matching.
//!
//! Person Name (PN) values match case-insensitively: both sides are folded
//! with Unicode lower-casing, and trailing empty name components (`^`) are
//! ignored. PS3.4 C.2.2.2.1 allows this for PN, and Orthanc 1.10.1 matches
//! names the same way by default. Every other VR matches case-sensitively.

use dicom_core::VR;

use super::Key;

/// The matching rule of one key (PS3.4 section C.2.2.2).
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    /// Zero-length key or a lone `*`: every entity matches (C.2.2.2.3).
    Universal,
    /// One value that must be equal (C.2.2.2.1).
    Single(String),
    /// Several values, of which one must be equal: UID lists (C.2.2.2.2) and
    /// multiple values of other VRs.
    List(Vec<String>),
    /// A pattern where `*` matches any run of characters and `?` one character (C.2.2.2.4).
    Wildcard(String),
    /// An inclusive date, time or datetime range, open at either end (C.2.2.2.5).
    Range {
        lower: Option<String>,
        upper: Option<String>,
    },
    /// Sequence matching (C.2.2.2.6): an item must match every key of the
    /// query item. No keys is universal matching.
    Sequence(Vec<Key>),
}

/// Builds the matcher for a key value of VR `vr` as it appears in a request.
///
/// Leading and trailing spaces are not significant. Fails with the reason
/// when the value cannot be a key of that VR (a wildcard in a UID or date, a
/// malformed range).
pub fn parse_matcher(vr: VR, raw: &str) -> Result<Matcher, String> {
    let value = raw.trim_matches([' ', '\0']);
    if value.is_empty() {
        return Ok(Matcher::Universal);
    }
    match vr {
        VR::UI if has_wildcard(value) => Err("UID key takes no wildcard".to_owned()),
        VR::UI => Ok(parse_uid_list(value)),
        VR::DA | VR::TM | VR::DT => parse_range_or_single(vr, value),
        _ if allows_wildcard(vr) && has_wildcard(value) => {
            if value.chars().all(|c| c == '*') {
                Ok(Matcher::Universal)
            } else {
                Ok(Matcher::Wildcard(value.to_owned()))
            }
        }
        _ if value.contains('\\') && splits_values(vr) => Ok(Matcher::List(split_values(value))),
        _ => Ok(Matcher::Single(value.to_owned())),
    }
}

/// Tells whether `stored` (absent, or backslash-separated values) matches.
///
/// Sequence matchers are never satisfied by text: the caller matches items.
pub fn matches(vr: VR, matcher: &Matcher, stored: Option<&str>) -> bool {
    if matches!(matcher, Matcher::Universal) {
        return true;
    }
    let Some(stored) = stored else { return false };
    let stored = stored.trim_matches([' ', '\0']);
    if stored.is_empty() {
        return false;
    }
    let mut values: Vec<&str> = if splits_values(vr) {
        stored.split('\\').collect()
    } else {
        vec![stored]
    };
    for value in &mut values {
        *value = value.trim_matches([' ', '\0']);
    }
    match matcher {
        Matcher::Universal => true,
        Matcher::Single(key) => values.iter().any(|v| equal(vr, key, v)),
        Matcher::List(keys) => values.iter().any(|v| keys.iter().any(|key| equal(vr, key, v))),
        Matcher::Wildcard(pattern) => values.iter().any(|v| wildcard_match(vr, pattern, v)),
        Matcher::Range { lower, upper } => values.iter().any(|v| in_range(lower.as_deref(), upper.as_deref(), v)),
        Matcher::Sequence(_) => false,
    }
}

/// Wildcards apply to the string VRs of C.2.2.2.4; dates, times, UIDs and numbers take none.
pub fn allows_wildcard(vr: VR) -> bool {
    matches!(
        vr,
        VR::AE | VR::CS | VR::LO | VR::LT | VR::PN | VR::SH | VR::ST | VR::UC | VR::UR | VR::UT
    )
}

/// True for the VRs whose backslash separates values; LT, ST, UT and UR are single-valued text.
pub fn splits_values(vr: VR) -> bool {
    !matches!(vr, VR::LT | VR::ST | VR::UT | VR::UR)
}

fn has_wildcard(value: &str) -> bool {
    value.contains(['*', '?'])
}

fn split_values(value: &str) -> Vec<String> {
    value
        .split('\\')
        .map(|v| v.trim_matches([' ', '\0']))
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_uid_list(value: &str) -> Matcher {
    let mut uids = split_values(value);
    if uids.len() == 1 {
        Matcher::Single(uids.remove(0))
    } else {
        Matcher::List(uids)
    }
}

/// Parses a range, `lower-upper`, `-upper` or `lower-` (C.2.2.2.5), or a single value.
///
/// NOTE: a DT value with a negative UTC offset (`...-0500`) is read as a
/// range, because the hyphen is taken as the range separator.
fn parse_range_or_single(vr: VR, value: &str) -> Result<Matcher, String> {
    if value.contains(['*', '?']) {
        return Err(format!("{vr:?} key takes a range, not a wildcard"));
    }
    if value.contains('\\') {
        return Ok(Matcher::List(split_values(value)));
    }
    let Some((lower, upper)) = value.split_once('-') else {
        return Ok(Matcher::Single(value.to_owned()));
    };
    let lower = lower.trim();
    let upper = upper.trim();
    if upper.contains('-') {
        return Err(format!("{vr:?} range with more than one hyphen"));
    }
    if lower.is_empty() && upper.is_empty() {
        return Err(format!("{vr:?} range without a bound"));
    }
    Ok(Matcher::Range {
        lower: (!lower.is_empty()).then(|| lower.to_owned()),
        upper: (!upper.is_empty()).then(|| upper.to_owned()),
    })
}

fn equal(vr: VR, key: &str, value: &str) -> bool {
    match vr {
        VR::PN => fold_person_name(key) == fold_person_name(value),
        VR::IS | VR::DS | VR::US | VR::UL | VR::SS | VR::SL | VR::FL | VR::FD | VR::SV | VR::UV => {
            match (key.parse::<f64>(), value.parse::<f64>()) {
                (Ok(k), Ok(v)) => k == v,
                _ => key == value,
            }
        }
        _ => key == value,
    }
}

/// Lower-cases a person name and drops trailing empty components and groups.
pub fn fold_person_name(name: &str) -> String {
    name.trim_end_matches(['^', '=', ' ']).to_lowercase()
}

fn wildcard_match(vr: VR, pattern: &str, value: &str) -> bool {
    if vr == VR::PN {
        let pattern: Vec<char> = pattern.to_lowercase().chars().collect();
        let value: Vec<char> = fold_person_name(value).chars().collect();
        glob(&pattern, &value)
    } else {
        let pattern: Vec<char> = pattern.chars().collect();
        let value: Vec<char> = value.chars().collect();
        glob(&pattern, &value)
    }
}

/// Matches `*` (any run, empty included) and `?` (exactly one character).
fn glob(pattern: &[char], value: &[char]) -> bool {
    let (mut p, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == value[v]) {
            p += 1;
            v += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, v));
            p += 1;
        } else if let Some((star_p, star_v)) = star {
            p = star_p + 1;
            v = star_v + 1;
            star = Some((star_p, star_v + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Tests an inclusive range on text: the value is at least `lower`, and its first
/// `upper.len()` characters are at most `upper`. So a bound given with less
/// precision covers the whole interval it names: `-0800` takes 08:00:59 too.
/// The SQL side ([`super::sql`]) applies the same rule with `substr`.
pub fn in_range(lower: Option<&str>, upper: Option<&str>, value: &str) -> bool {
    if let Some(lower) = lower {
        if value < lower {
            return false;
        }
    }
    if let Some(upper) = upper {
        let prefix: String = value.chars().take(upper.chars().count()).collect();
        if prefix.as_str() > upper {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(vr: VR, key: &str, stored: Option<&str>) -> bool {
        matches(vr, &parse_matcher(vr, key).unwrap(), stored)
    }

    #[test]
    fn empty_key_is_universal() {
        assert_eq!(parse_matcher(VR::PN, "").unwrap(), Matcher::Universal);
        assert_eq!(parse_matcher(VR::LO, "  ").unwrap(), Matcher::Universal);
        assert!(m(VR::LO, "", None));
        assert!(m(VR::LO, "", Some("")));
    }

    #[test]
    fn lone_star_is_universal() {
        assert_eq!(parse_matcher(VR::PN, "*").unwrap(), Matcher::Universal);
        assert!(m(VR::PN, "*", None));
    }

    #[test]
    fn single_value_is_case_sensitive_except_pn() {
        assert!(m(VR::CS, "CT", Some("CT")));
        assert!(!m(VR::CS, "ct", Some("CT")));
        assert!(m(VR::PN, "doe^john", Some("DOE^JOHN")));
        assert!(m(VR::PN, "müller", Some("MÜLLER")));
        assert!(m(VR::PN, "Doe^John", Some("Doe^John^^^")));
        assert!(!m(VR::PN, "Doe", Some("Doe^John")));
    }

    #[test]
    fn absent_or_empty_value_matches_only_universal() {
        assert!(!m(VR::CS, "CT", None));
        assert!(!m(VR::CS, "CT", Some("")));
        assert!(!m(VR::PN, "D*", None));
        assert!(!m(VR::DA, "20000101-", Some("")));
    }

    #[test]
    fn uid_list_matches_any() {
        let matcher = parse_matcher(VR::UI, "1.2.3\\1.2.4").unwrap();
        assert_eq!(matcher, Matcher::List(vec!["1.2.3".into(), "1.2.4".into()]));
        assert!(matches(VR::UI, &matcher, Some("1.2.4")));
        assert!(!matches(VR::UI, &matcher, Some("1.2.5")));
        assert_eq!(parse_matcher(VR::UI, "1.2.3").unwrap(), Matcher::Single("1.2.3".into()));
    }

    #[test]
    fn wildcards() {
        assert!(m(VR::PN, "D*", Some("Doe^John")));
        assert!(m(VR::PN, "d*", Some("Doe^John")));
        assert!(m(VR::PN, "*john", Some("Doe^John")));
        assert!(m(VR::PN, "Do?^*", Some("Doe^John")));
        assert!(!m(VR::PN, "Do?", Some("Doe^John")));
        assert!(m(VR::LO, "AB*", Some("ABC")));
        assert!(!m(VR::LO, "ab*", Some("ABC")));
        assert!(m(VR::SH, "A?C", Some("ABC")));
        assert!(m(VR::SH, "A**C", Some("AC")));
        assert!(m(VR::SH, "*B*", Some("ABC")));
        assert!(!m(VR::SH, "*D*", Some("ABC")));
        assert!(m(VR::PN, "?", Some("ß")));
    }

    #[test]
    fn wildcard_rejected_in_uid_and_date() {
        assert!(parse_matcher(VR::DA, "2000*").is_err());
        assert!(parse_matcher(VR::UI, "1.2.*").is_err());
        assert!(parse_matcher(VR::UI, "1.?").is_err());
    }

    #[test]
    fn multi_valued_stored_value_matches_any_value() {
        assert!(m(VR::CS, "MR", Some("CT\\MR")));
        assert!(m(VR::CS, "PT\\MR", Some("CT\\MR")));
        assert!(!m(VR::CS, "PT", Some("CT\\MR")));
        assert!(m(VR::CS, "M*", Some("CT\\MR")));
    }

    #[test]
    fn date_ranges() {
        assert!(m(VR::DA, "20000101-", Some("20040826")));
        assert!(!m(VR::DA, "20000101-", Some("19991231")));
        assert!(m(VR::DA, "-20100101", Some("20100101")));
        assert!(!m(VR::DA, "-20100101", Some("20100102")));
        assert!(m(VR::DA, "20000101-20100101", Some("20040826")));
        assert!(!m(VR::DA, "20000101-20030101", Some("20040826")));
        assert!(m(VR::DA, "20040826", Some("20040826")));
        assert!(parse_matcher(VR::DA, "-").is_err());
        assert!(parse_matcher(VR::DA, "1-2-3").is_err());
    }

    #[test]
    fn time_range_upper_bound_covers_its_precision() {
        assert!(m(VR::TM, "0700-0800", Some("080059.123")));
        assert!(!m(VR::TM, "0700-0800", Some("080100")));
        assert!(m(VR::TM, "0700-", Some("070000")));
        assert!(!m(VR::TM, "0700-", Some("065959")));
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(m(VR::IS, "7", Some("007")));
        assert!(m(VR::IS, "7", Some("7")));
        assert!(!m(VR::IS, "7", Some("8")));
        assert!(m(VR::DS, "1.50", Some("1.5")));
    }

    #[test]
    fn text_vrs_keep_backslashes() {
        assert_eq!(parse_matcher(VR::LT, "a\\b").unwrap(), Matcher::Single("a\\b".into()));
        assert!(m(VR::LT, "a\\b", Some("a\\b")));
    }
}
