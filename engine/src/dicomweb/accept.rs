//! Content negotiation of WADO-RS responses (PS3.18). nectar
//! serves what it stored and does not transcode, so a request is acceptable
//! when one Accept media range matches the stored media type and either names
//! no transfer syntax, names `*`, or names the stored one.

use actix_web::http::header::ACCEPT;
use actix_web::HttpRequest;

use super::errors::DicomWebError;
use super::media::MediaType;

/// Explicit VR Little Endian, the default transfer syntax of PS3.18.
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

/// The content a response would carry.
#[derive(Debug, Clone)]
pub struct Offer<'a> {
    /// Media type of each part, e.g. `application/dicom` or `image/jpeg`.
    pub media_type: &'a str,
    /// Transfer syntax of the part's content.
    pub transfer_syntax: &'a str,
    /// Other transfer syntaxes whose bytes are identical for this content
    /// (native pixel data is the same in Implicit and Explicit VR Little Endian).
    pub equivalent: &'a [&'a str],
}

/// Checks the Accept header of a multipart response against what it would contain.
pub fn check_multipart(request: &HttpRequest, offer: &Offer<'_>) -> Result<(), DicomWebError> {
    let Some(ranges) = accept_ranges(request) else {
        return Ok(());
    };
    if ranges.iter().any(|range| matches_multipart(range, offer)) {
        return Ok(());
    }
    Err(DicomWebError::NotAcceptable(format!(
        "none of the Accept media types can be served: the content is stored as multipart/related; type=\"{}\"; transfer-syntax={}, and nectar does not transcode",
        offer.media_type, offer.transfer_syntax
    )))
}

/// Checks the Accept header of a DICOM JSON response.
pub fn check_json(request: &HttpRequest) -> Result<(), DicomWebError> {
    let Some(ranges) = accept_ranges(request) else {
        return Ok(());
    };
    let acceptable = ["application/dicom+json", "application/json", "application/*", "*/*"];
    if ranges.iter().any(|range| acceptable.contains(&range.essence.as_str())) {
        return Ok(());
    }
    Err(DicomWebError::NotAcceptable("metadata is served as application/dicom+json only".into()))
}

/// Parses the media ranges of the Accept header. Returns `None` when it is absent or empty.
fn accept_ranges(request: &HttpRequest) -> Option<Vec<MediaType>> {
    let header = request.headers().get(ACCEPT)?.to_str().ok()?;
    let ranges = MediaType::parse_list(header);
    (!ranges.is_empty()).then_some(ranges)
}

fn matches_multipart(range: &MediaType, offer: &Offer<'_>) -> bool {
    match range.essence.as_str() {
        "*/*" | "multipart/*" => true,
        "multipart/related" => {
            let type_matches = match range.related_type() {
                None => true,
                Some(related) => media_type_matches(&related, offer.media_type),
            };
            type_matches && transfer_syntax_matches(range.param("transfer-syntax"), offer)
        }
        _ => false,
    }
}

fn media_type_matches(requested: &str, offered: &str) -> bool {
    if requested == "*/*" || requested == offered {
        return true;
    }
    match requested.strip_suffix("/*") {
        Some(major) => offered.split('/').next() == Some(major),
        None => false,
    }
}

fn transfer_syntax_matches(requested: Option<&str>, offer: &Offer<'_>) -> bool {
    match requested.map(str::trim) {
        // NOTE: PS3.18 makes Explicit VR Little Endian the default when no
        // transfer syntax is named. nectar serves the stored syntax instead,
        // because it does not transcode.
        None | Some("*") => true,
        Some(uid) => uid == offer.transfer_syntax || offer.equivalent.contains(&uid),
    }
}

/// Returns the media type PS3.18 gives frames and bulk data in transfer
/// syntax `uid`, or `None` for native (uncompressed) encodings.
pub fn compressed_media_type(uid: &str) -> Option<&'static str> {
    let media_type = match uid {
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" | "1.2.840.10008.1.2.4.57" | "1.2.840.10008.1.2.4.70" => {
            "image/jpeg"
        }
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.92" | "1.2.840.10008.1.2.4.93" => "image/jpx",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => "image/jphc",
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        "1.2.840.10008.1.2.4.100" | "1.2.840.10008.1.2.4.101" => "video/mpeg",
        "1.2.840.10008.1.2.4.102"
        | "1.2.840.10008.1.2.4.103"
        | "1.2.840.10008.1.2.4.104"
        | "1.2.840.10008.1.2.4.105"
        | "1.2.840.10008.1.2.4.106" => "video/mp4",
        "1.2.840.10008.1.2.4.107" | "1.2.840.10008.1.2.4.108" => "video/H265",
        _ => return None,
    };
    Some(media_type)
}

#[cfg(test)]
mod tests {
    use super::{matches_multipart, Offer, EXPLICIT_VR_LITTLE_ENDIAN};
    use crate::dicomweb::media::MediaType;

    const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";

    fn accepts(range: &str, offer: &Offer<'_>) -> bool {
        matches_multipart(&MediaType::parse(range).expect("valid media range"), offer)
    }

    #[test]
    fn stored_or_any_transfer_syntax_accepted() {
        let offer = Offer { media_type: "image/jpeg", transfer_syntax: JPEG_BASELINE, equivalent: &[] };
        assert!(accepts(r#"multipart/related; type="image/jpeg""#, &offer));
        assert!(accepts(r#"multipart/related; type="image/jpeg"; transfer-syntax=*"#, &offer));
        assert!(accepts(&format!(r#"multipart/related; type="image/jpeg"; transfer-syntax={JPEG_BASELINE}"#), &offer));
        assert!(accepts("multipart/related; type=image/*", &offer));
        assert!(accepts("*/*", &offer));
    }

    #[test]
    fn other_syntax_or_type_rejected() {
        let offer = Offer { media_type: "image/jpeg", transfer_syntax: JPEG_BASELINE, equivalent: &[] };
        let explicit = format!(r#"multipart/related; type="image/jpeg"; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"#);
        assert!(!accepts(&explicit, &offer));
        assert!(!accepts(r#"multipart/related; type="application/octet-stream""#, &offer));
        assert!(!accepts("image/jpeg", &offer));
    }

    #[test]
    fn equivalent_syntax_accepted() {
        let offer = Offer {
            media_type: "application/octet-stream",
            transfer_syntax: EXPLICIT_VR_LITTLE_ENDIAN,
            equivalent: &["1.2.840.10008.1.2"],
        };
        assert!(accepts(r#"multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2"#, &offer));
    }
}
