//! Media types with parameters (RFC 9110 section 8.3.1) as they appear in
//! Content-Type and Accept headers of DICOMweb requests.

/// One media type, such as `multipart/related; type="application/dicom"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// `type/subtype` in lower case.
    pub essence: String,
    /// Parameters in header order; names in lower case, values unquoted.
    pub params: Vec<(String, String)>,
}

impl MediaType {
    /// Parses one media type. Returns `None` when the `type/subtype` part is missing.
    pub fn parse(text: &str) -> Option<MediaType> {
        let mut pieces = split_outside_quotes(text, b';').into_iter();
        let essence = pieces.next()?.trim().to_ascii_lowercase();
        if !essence.contains('/') || essence.starts_with('/') || essence.ends_with('/') {
            return None;
        }
        let params = pieces
            .filter_map(|piece| {
                let (name, value) = piece.split_once('=')?;
                Some((name.trim().to_ascii_lowercase(), unquote(value.trim())))
            })
            .collect();
        Some(MediaType { essence, params })
    }

    /// Parses an Accept header into its media ranges, skipping invalid ones.
    pub fn parse_list(text: &str) -> Vec<MediaType> {
        split_outside_quotes(text, b',').iter().filter_map(|range| MediaType::parse(range)).collect()
    }

    /// Returns the value of parameter `name` (lower case).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// Returns the `type` parameter of a multipart type, in lower case.
    pub fn related_type(&self) -> Option<String> {
        self.param("type").map(|value| value.trim().to_ascii_lowercase())
    }
}

fn split_outside_quotes(text: &str, separator: u8) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (index, byte) in text.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && byte == b'\\' {
            escaped = true;
        } else if byte == b'"' {
            quoted = !quoted;
        } else if byte == separator && !quoted {
            pieces.push(&text[start..index]);
            start = index + 1;
        }
    }
    pieces.push(&text[start..]);
    pieces
}

fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')) else {
        return value.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::MediaType;

    #[test]
    fn quoted_and_unquoted_parameters() {
        let quoted = MediaType::parse(r#"Multipart/Related; type="application/dicom"; boundary="a;b=c""#).unwrap();
        assert_eq!(quoted.essence, "multipart/related");
        assert_eq!(quoted.related_type().as_deref(), Some("application/dicom"));
        assert_eq!(quoted.param("boundary"), Some("a;b=c"));

        let unquoted = MediaType::parse("multipart/related;boundary=xyz ; type=application/dicom").unwrap();
        assert_eq!(unquoted.param("boundary"), Some("xyz"));
        assert_eq!(unquoted.related_type().as_deref(), Some("application/dicom"));
    }

    #[test]
    fn accept_list_keeps_quoted_commas() {
        let ranges = MediaType::parse_list(
            r#"multipart/related; type="application/dicom"; transfer-syntax=*, application/dicom+json, bogus"#,
        );
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].param("transfer-syntax"), Some("*"));
        assert_eq!(ranges[1].essence, "application/dicom+json");
    }
}
