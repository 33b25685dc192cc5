//! An incremental parser of multipart bodies (RFC 2046 section 5.1, as used
//! by multipart/related in RFC 2387). Chunks go in as they arrive from the
//! socket and part bytes come out without waiting for the part's end, so a
//! body of any size passes through a buffer no larger than one chunk plus
//! the delimiter.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;

/// Maximum length of one part's header block, in bytes.
const MAX_HEADER_BLOCK: usize = 16 * 1024;

/// Maximum boundary length RFC 2046 allows.
const MAX_BOUNDARY_LEN: usize = 70;

/// An item the parser found in the bytes fed so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A part begins; its headers as (lower-case name, value) pairs.
    PartStart(Vec<(String, String)>),
    /// The next bytes of the current part's body.
    Data(Bytes),
    /// The current part's body is complete.
    PartEnd,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultipartError {
    #[error("invalid multipart boundary {0:?}: it must have 1 to 70 characters")]
    InvalidBoundary(String),
    #[error("a part's header block is longer than {MAX_HEADER_BLOCK} bytes")]
    HeaderTooLong,
    #[error("a part's header line {0:?} has no colon")]
    InvalidHeader(String),
    #[error("the body ends before the closing boundary")]
    Truncated,
    #[error("the body has no boundary line")]
    NoBoundary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter.
    Preamble,
    /// After a delimiter: `--` closes the body, otherwise the line ends and headers follow.
    AfterDelimiter,
    Headers,
    Body,
    /// After the close delimiter; the epilogue is ignored.
    Done,
}

/// The incremental parser for one body.
pub struct Parser {
    /// `CRLF--boundary`.
    delimiter: Vec<u8>,
    buffer: BytesMut,
    state: State,
}

impl Parser {
    pub fn new(boundary: &str) -> Result<Parser, MultipartError> {
        if boundary.is_empty() || boundary.len() > MAX_BOUNDARY_LEN {
            return Err(MultipartError::InvalidBoundary(boundary.to_string()));
        }
        let delimiter = [b"\r\n--".as_slice(), boundary.as_bytes()].concat();
        // The first delimiter may start the body without a CRLF before it, so
        // the buffer starts with one.
        let mut buffer = BytesMut::with_capacity(64 * 1024);
        buffer.extend_from_slice(b"\r\n");
        Ok(Parser { delimiter, buffer, state: State::Preamble })
    }

    /// Feeds the next chunk of the body and appends what it completes to `events`.
    pub fn feed(&mut self, chunk: &[u8], events: &mut Vec<Event>) -> Result<(), MultipartError> {
        if self.state == State::Done {
            return Ok(());
        }
        self.buffer.extend_from_slice(chunk);
        while self.step(events)? {}
        Ok(())
    }

    /// Checks that the body ended after its close delimiter.
    pub fn finish(&self) -> Result<(), MultipartError> {
        match self.state {
            State::Done => Ok(()),
            State::Preamble => Err(MultipartError::NoBoundary),
            _ => Err(MultipartError::Truncated),
        }
    }

    /// Makes one step of progress; returns false when more input is needed.
    fn step(&mut self, events: &mut Vec<Event>) -> Result<bool, MultipartError> {
        match self.state {
            State::Preamble => Ok(self.skip_preamble()),
            State::AfterDelimiter => self.read_delimiter_end(),
            State::Headers => self.read_headers(events),
            State::Body => Ok(self.read_body(events)),
            State::Done => Ok(false),
        }
    }

    fn skip_preamble(&mut self) -> bool {
        match memmem::find(&self.buffer, &self.delimiter) {
            Some(at) => {
                self.buffer.advance(at + self.delimiter.len());
                self.state = State::AfterDelimiter;
                true
            }
            None => {
                let keep = self.delimiter.len() - 1;
                if self.buffer.len() > keep {
                    self.buffer.advance(self.buffer.len() - keep);
                }
                false
            }
        }
    }

    fn read_delimiter_end(&mut self) -> Result<bool, MultipartError> {
        if self.buffer.len() < 2 {
            return Ok(false);
        }
        if self.buffer.starts_with(b"--") {
            self.state = State::Done;
            self.buffer.clear();
            return Ok(false);
        }
        // Transport padding (spaces and tabs) may follow the boundary before CRLF.
        let Some(line_end) = memmem::find(&self.buffer, b"\r\n") else {
            if self.buffer.len() > MAX_HEADER_BLOCK {
                return Err(MultipartError::HeaderTooLong);
            }
            return Ok(false);
        };
        self.buffer.advance(line_end + 2);
        self.state = State::Headers;
        Ok(true)
    }

    fn read_headers(&mut self, events: &mut Vec<Event>) -> Result<bool, MultipartError> {
        let block_len = if self.buffer.starts_with(b"\r\n") {
            Some(0)
        } else {
            memmem::find(&self.buffer, b"\r\n\r\n").map(|at| at + 2)
        };
        let Some(block_len) = block_len else {
            if self.buffer.len() > MAX_HEADER_BLOCK {
                return Err(MultipartError::HeaderTooLong);
            }
            return Ok(false);
        };
        if block_len > MAX_HEADER_BLOCK {
            return Err(MultipartError::HeaderTooLong);
        }
        let headers = parse_header_block(&self.buffer[..block_len])?;
        self.buffer.advance(block_len + 2);
        events.push(Event::PartStart(headers));
        self.state = State::Body;
        Ok(true)
    }

    fn read_body(&mut self, events: &mut Vec<Event>) -> bool {
        if let Some(at) = memmem::find(&self.buffer, &self.delimiter) {
            if at > 0 {
                events.push(Event::Data(self.buffer.split_to(at).freeze()));
            }
            self.buffer.advance(self.delimiter.len());
            events.push(Event::PartEnd);
            self.state = State::AfterDelimiter;
            return true;
        }
        // The tail may be the start of a delimiter split across chunks.
        let safe = self.buffer.len().saturating_sub(self.delimiter.len() - 1);
        if safe > 0 {
            events.push(Event::Data(self.buffer.split_to(safe).freeze()));
        }
        false
    }
}

fn parse_header_block(block: &[u8]) -> Result<Vec<(String, String)>, MultipartError> {
    let text = String::from_utf8_lossy(block);
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n").filter(|line| !line.is_empty()) {
        if line.starts_with([' ', '\t']) {
            // An obsolete folded line continues the previous header (RFC 5322 section 2.2.3).
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
                continue;
            }
        }
        let (name, value) = line.split_once(':').ok_or_else(|| MultipartError::InvalidHeader(line.to_string()))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(headers)
}

/// Returns the value of header `name` (lower case).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Headers = Vec<(String, String)>;

    /// Feeds `body` in chunks of `chunk_len` bytes and returns each part's headers and body.
    fn parse_in_chunks(boundary: &str, body: &[u8], chunk_len: usize) -> Result<Vec<(Headers, Vec<u8>)>, MultipartError> {
        let mut parser = Parser::new(boundary)?;
        let mut events = Vec::new();
        for chunk in body.chunks(chunk_len) {
            parser.feed(chunk, &mut events)?;
        }
        parser.finish()?;

        let mut parts = Vec::new();
        for event in events {
            match event {
                Event::PartStart(headers) => parts.push((headers, Vec::new())),
                Event::Data(bytes) => parts.last_mut().expect("data inside a part").1.extend_from_slice(&bytes),
                Event::PartEnd => {}
            }
        }
        Ok(parts)
    }

    fn two_part_body() -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(b"preamble text\r\n--XyZ\r\nContent-Type: application/dicom\r\n\r\n");
        body.extend_from_slice(b"first\r\n--Xy not a delimiter\r\n-");
        body.extend_from_slice(b"\r\n--XyZ  \r\nContent-Type: application/dicom\r\nContent-Length: 6\r\n\r\nsecond");
        body.extend_from_slice(b"\r\n--XyZ--\r\nepilogue");
        body
    }

    #[test]
    fn boundaries_split_across_chunks() {
        let body = two_part_body();
        for chunk_len in [1, 2, 3, 5, 7, 11, 64, body.len()] {
            let parts = parse_in_chunks("XyZ", &body, chunk_len).unwrap();
            assert_eq!(parts.len(), 2, "chunk length {chunk_len}");
            assert_eq!(parts[0].1, b"first\r\n--Xy not a delimiter\r\n-", "chunk length {chunk_len}");
            assert_eq!(parts[1].1, b"second", "chunk length {chunk_len}");
            assert_eq!(header(&parts[1].0, "content-length"), Some("6"));
            assert_eq!(header(&parts[0].0, "content-type"), Some("application/dicom"));
        }
    }

    #[test]
    fn body_starting_with_delimiter() {
        let body = b"--b\r\n\r\npayload\r\n--b--";
        let parts = parse_in_chunks("b", body, 4).unwrap();
        assert_eq!(parts.len(), 1);
        assert!(parts[0].0.is_empty());
        assert_eq!(parts[0].1, b"payload");
    }

    #[test]
    fn missing_close_delimiter_is_truncated() {
        let body = b"--b\r\nContent-Type: application/dicom\r\n\r\npayload";
        assert_eq!(parse_in_chunks("b", body, 3).unwrap_err(), MultipartError::Truncated);
    }

    #[test]
    fn body_without_boundary() {
        assert_eq!(parse_in_chunks("b", b"just some bytes", 4).unwrap_err(), MultipartError::NoBoundary);
    }

    #[test]
    fn header_line_without_colon() {
        let body = b"--b\r\nnot a header\r\n\r\nx\r\n--b--";
        assert!(matches!(parse_in_chunks("b", body, 100), Err(MultipartError::InvalidHeader(_))));
    }

    #[test]
    fn boundary_length_checked() {
        assert!(Parser::new("").is_err());
        assert!(Parser::new(&"a".repeat(71)).is_err());
    }

    #[test]
    fn data_released_before_part_end() {
        let mut parser = Parser::new("b").unwrap();
        let mut events = Vec::new();
        parser.feed(b"--b\r\n\r\n", &mut events).unwrap();
        parser.feed(&[7u8; 1000], &mut events).unwrap();
        let released: usize = events
            .iter()
            .map(|event| match event {
                Event::Data(bytes) => bytes.len(),
                _ => 0,
            })
            .sum();
        assert!(released >= 1000 - 4, "only {released} of 1000 bytes released");
    }
}
