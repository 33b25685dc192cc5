//! Frames (`.../frames/{list}`, PS3.18 Retrieve Transaction) and bulk data
//! (`.../bulkdata/{tag-path}`) of a stored instance.

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use dicom_core::value::Value as DicomValue;
use dicom_core::Tag;
use dicom_object::mem::{InMemDicomObject, InMemElement};

use super::accept::{self, Offer, EXPLICIT_VR_LITTLE_ENDIAN};
use super::errors::DicomWebError;
use super::response::{self, Part};
use super::wado::{self, ResourcePath};
use crate::http::HttpState;

const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
const OCTET_STREAM: &str = "application/octet-stream";

/// The encoding of the requested bytes.
struct Encoding {
    media_type: &'static str,
    /// The transfer syntax named in the part's Content-Type.
    transfer_syntax: String,
    equivalent: &'static [&'static str],
}

/// The encoding of pixel data or bulk data of an instance stored in `transfer_syntax`.
/// dicom-object keeps native values in host byte order whatever the stored
/// byte order. Little-endian values are identical in Implicit and Explicit VR
/// Little Endian, so native bytes are named Explicit VR Little Endian and
/// either little-endian name is acceptable for them.
///
/// NOTE: this naming is right on little-endian hosts only.
fn encoding_of(transfer_syntax: &str, encapsulated: bool) -> Encoding {
    if !encapsulated {
        return Encoding {
            media_type: OCTET_STREAM,
            transfer_syntax: EXPLICIT_VR_LITTLE_ENDIAN.to_string(),
            equivalent: &[IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN],
        };
    }
    let media_type = accept::compressed_media_type(transfer_syntax).unwrap_or(OCTET_STREAM);
    Encoding { media_type, transfer_syntax: transfer_syntax.to_string(), equivalent: &[] }
}

/// Values taken out of a parsed instance.
struct Extracted {
    encapsulated: bool,
    parts: Vec<Bytes>,
}

/// `GET .../instances/{instance}/frames/{list}`.
pub async fn frames(
    request: HttpRequest,
    state: web::Data<HttpState>,
    path: ResourcePath,
    list: String,
) -> Result<HttpResponse, DicomWebError> {
    let numbers = parse_frame_list(&list)?;
    extract_and_respond(request, state, path, move |object| {
        let element = object
            .get(PIXEL_DATA)
            .ok_or_else(|| DicomWebError::NotFound("the instance has no Pixel Data (7FE0,0010)".into()))?;
        let frames = split_frames(object, element)?;
        let mut parts = Vec::with_capacity(numbers.len());
        for number in &numbers {
            let frame = frames.parts.get(number - 1).ok_or_else(|| {
                DicomWebError::NotFound(format!("frame {number} not found: the instance has {} frames", frames.parts.len()))
            })?;
            parts.push(frame.clone());
        }
        Ok(Extracted { encapsulated: frames.encapsulated, parts })
    })
    .await
}

/// `GET .../instances/{instance}/bulkdata/{tag-path}`. Encapsulated pixel
/// data is returned as one part per frame.
pub async fn bulk_data(
    request: HttpRequest,
    state: web::Data<HttpState>,
    path: ResourcePath,
    tag_path: String,
) -> Result<HttpResponse, DicomWebError> {
    extract_and_respond(request, state, path, move |object| {
        let element = find_element(object, &tag_path)?;
        match element.value() {
            DicomValue::PixelSequence(_) => split_frames(object, element),
            DicomValue::Primitive(value) => Ok(Extracted { encapsulated: false, parts: vec![Bytes::from(value.to_bytes().into_owned())] }),
            DicomValue::Sequence(_) => Err(DicomWebError::NotFound(format!("{tag_path} is a sequence, not bulk data"))),
        }
    })
    .await
}

/// Finds the instance, parses it off the async thread, runs `extract` and
/// responds with its parts if the Accept header allows their encoding.
async fn extract_and_respond<F>(
    request: HttpRequest,
    state: web::Data<HttpState>,
    path: ResourcePath,
    extract: F,
) -> Result<HttpResponse, DicomWebError>
where
    F: FnOnce(&InMemDicomObject) -> Result<Extracted, DicomWebError> + Send + 'static,
{
    let instance = wado::find_instances(&state, &path).await?.swap_remove(0);
    let record = wado::read_record(&state, &instance)?;
    let sop_instance_uid = instance.sop_instance_uid.clone();
    let extracted = web::block(move || {
        let object = wado::parse_part10(&record, &sop_instance_uid)?;
        extract(&object)
    })
    .await
    .map_err(|error| DicomWebError::Internal(format!("frame extraction task failed: {error}")))??;

    let encoding = encoding_of(&instance.transfer_syntax_uid, extracted.encapsulated);
    let offer = Offer { media_type: encoding.media_type, transfer_syntax: &encoding.transfer_syntax, equivalent: encoding.equivalent };
    accept::check_multipart(&request, &offer)?;
    let content_type = format!("{}; transfer-syntax={}", encoding.media_type, encoding.transfer_syntax);
    let parts = extracted
        .parts
        .into_iter()
        .map(|body| Part { content_type: content_type.clone(), location: None, body })
        .collect();
    Ok(response::multipart(encoding.media_type, parts))
}

/// Parses `1,3,5` into frame numbers (1-based, in request order).
fn parse_frame_list(list: &str) -> Result<Vec<usize>, DicomWebError> {
    let numbers: Result<Vec<usize>, _> = list.split(',').map(|number| number.trim().parse::<usize>()).collect();
    match numbers {
        Ok(numbers) if !numbers.is_empty() && !numbers.contains(&0) => Ok(numbers),
        _ => Err(DicomWebError::BadRequest(format!(
            "invalid frame list {list:?}: expected comma-separated frame numbers starting at 1"
        ))),
    }
}

/// Finds the element at a bulk data tag path: tags and item indexes separated
/// by `/`, e.g. `7FE00010` or `00283010/0/00283006`.
fn find_element<'a>(object: &'a InMemDicomObject, tag_path: &str) -> Result<&'a InMemElement, DicomWebError> {
    let not_found = || DicomWebError::NotFound(format!("no bulk data at {tag_path}"));
    let mut segments = tag_path.split('/');
    let mut current = object;
    loop {
        let tag = segments.next().and_then(parse_tag).ok_or_else(not_found)?;
        let element = current.get(tag).ok_or_else(not_found)?;
        let Some(index) = segments.next() else {
            return Ok(element);
        };
        let index: usize = index.parse().map_err(|_| not_found())?;
        current = element.items().and_then(|items| items.get(index)).ok_or_else(not_found)?;
    }
}

fn parse_tag(text: &str) -> Option<Tag> {
    if text.len() != 8 {
        return None;
    }
    let value = u32::from_str_radix(text, 16).ok()?;
    Some(Tag((value >> 16) as u16, value as u16))
}

fn number_of_frames(object: &InMemDicomObject) -> usize {
    object
        .get(Tag(0x0028, 0x0008))
        .and_then(|element| element.to_int::<i64>().ok())
        .filter(|frames| *frames > 0)
        .map_or(1, |frames| frames as usize)
}

fn attribute_u32(object: &InMemDicomObject, tag: Tag) -> Option<u32> {
    object.get(tag).and_then(|element| element.to_int::<u32>().ok())
}

/// Splits the Pixel Data element into frames, each as its own `Bytes`.
fn split_frames(object: &InMemDicomObject, element: &InMemElement) -> Result<Extracted, DicomWebError> {
    let frames = number_of_frames(object);
    match element.value() {
        DicomValue::PixelSequence(sequence) => {
            let parts = super::fragments::frames(sequence.offset_table(), sequence.fragments(), frames)
                .map_err(DicomWebError::Internal)?;
            Ok(Extracted { encapsulated: true, parts })
        }
        DicomValue::Primitive(value) => {
            let rows = attribute_u32(object, Tag(0x0028, 0x0010)).unwrap_or(0) as usize;
            let columns = attribute_u32(object, Tag(0x0028, 0x0011)).unwrap_or(0) as usize;
            let samples = attribute_u32(object, Tag(0x0028, 0x0002)).unwrap_or(1) as usize;
            let bits_allocated = attribute_u32(object, Tag(0x0028, 0x0100)).unwrap_or(0) as usize;
            let frame_bits = rows * columns * samples * bits_allocated;
            if frame_bits == 0 || !frame_bits.is_multiple_of(8) {
                return Err(DicomWebError::NotFound(format!(
                    "frames cannot be cut from this Pixel Data: {rows} rows, {columns} columns, {samples} samples per pixel, {bits_allocated} bits allocated"
                )));
            }
            let frame_len = frame_bits / 8;
            let pixels = Bytes::from(value.to_bytes().into_owned());
            if pixels.len() < frame_len * frames {
                return Err(DicomWebError::Internal(format!(
                    "Pixel Data has {} bytes, fewer than {frames} frames of {frame_len} bytes",
                    pixels.len()
                )));
            }
            let parts = (0..frames).map(|index| pixels.slice(index * frame_len..(index + 1) * frame_len)).collect();
            Ok(Extracted { encapsulated: false, parts })
        }
        DicomValue::Sequence(_) => Err(DicomWebError::Internal("Pixel Data (7FE0,0010) is a sequence".into())),
    }
}
