//! Buffered PDU reading and response writing on one association's socket.

use std::io;

use nectar_codecs::pdu;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Size of the read buffer. Fragments larger than this are read straight
/// into their destination instead of through the buffer.
const READ_BUFFER_LEN: usize = 64 * 1024;

/// A PDV payload at least this long is read straight into its destination,
/// so large fragments cost no copy through the read buffer.
const DIRECT_READ_MIN: usize = 16 * 1024;

/// Data fragment size used when the peer announced no maximum PDU length (0):
/// large enough that the per-PDU cost is negligible, small enough to keep
/// every PDU a reasonable unit for the peer to buffer.
const UNLIMITED_FRAGMENT_LEN: usize = 1024 * 1024;

/// The socket of one association with a read buffer in front of it.
pub struct Connection {
    stream: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    /// Whether bytes were read since the last write or forced ACK, so that
    /// the kernel may be delaying their ACK.
    ack_owed: bool,
}

/// The outcome of `fill`.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    Ready,
    /// The peer closed the connection with no partial PDU buffered.
    Closed,
}

impl Connection {
    pub fn new(stream: TcpStream) -> Connection {
        Connection {
            stream,
            buf: vec![0; READ_BUFFER_LEN].into_boxed_slice(),
            start: 0,
            end: 0,
            out: Vec::with_capacity(4096),
            ack_owed: false,
        }
    }

    fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Reads until at least `n` bytes are buffered (`n` at most the buffer size).
    ///
    /// Returns `Fill::Closed` on EOF with nothing buffered, and an
    /// `UnexpectedEof` error on EOF inside a partly received unit.
    pub async fn fill(&mut self, n: usize) -> io::Result<Fill> {
        debug_assert!(n <= self.buf.len());
        if self.buffered() >= n {
            return Ok(Fill::Ready);
        }
        if self.start + n > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.buffered() < n {
            let read = recv(&self.stream, &mut self.ack_owed, &mut self.buf[self.end..]).await?;
            if read == 0 {
                if self.buffered() == 0 {
                    return Ok(Fill::Closed);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed with {} bytes of a PDU received", self.buffered()),
                ));
            }
            self.end += read;
        }
        Ok(Fill::Ready)
    }

    /// Reads exactly `n` bytes into a buffer (`n` at most the buffer size)
    /// and returns them. EOF is an error here.
    pub async fn read_exact_buffered(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.fill(n).await? == Fill::Closed {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let bytes = &self.buf[self.start..self.start + n];
        self.start += n;
        Ok(bytes)
    }

    /// Fills `dst` completely: first from the buffer, then, for large
    /// remainders, straight from the socket into `dst`.
    pub async fn read_into(&mut self, dst: &mut [u8]) -> io::Result<()> {
        let from_buffer = self.buffered().min(dst.len());
        dst[..from_buffer].copy_from_slice(&self.buf[self.start..self.start + from_buffer]);
        self.start += from_buffer;
        let mut filled = from_buffer;

        while filled < dst.len() {
            let remaining = dst.len() - filled;
            if remaining >= DIRECT_READ_MIN {
                let read = recv(&self.stream, &mut self.ack_owed, &mut dst[filled..]).await?;
                if read == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                filled += read;
            } else {
                let chunk = remaining.min(self.buf.len());
                if self.fill(chunk).await? == Fill::Closed {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let take = self.buffered().min(remaining);
                dst[filled..filled + take].copy_from_slice(&self.buf[self.start..self.start + take]);
                self.start += take;
                filled += take;
            }
        }
        Ok(())
    }

    /// Reads and drops `n` bytes.
    pub async fn skip(&mut self, mut n: usize) -> io::Result<()> {
        while n > 0 {
            let chunk = n.min(self.buf.len());
            if self.fill(chunk).await? == Fill::Closed {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let take = self.buffered().min(n);
            self.start += take;
            n -= take;
        }
        Ok(())
    }

    /// Returns the reusable output buffer, which `flush_out` sends and clears.
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    pub async fn flush_out(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        self.ack_owed = false;
        Ok(())
    }

    /// Sends `data` as P-DATA-TF PDUs of one PDV each, within `max_pdu_length`
    /// (0 = unlimited, then 1 MiB fragments), the last one flagged as last.
    ///
    /// The PDU and PDV headers of each fragment go out in one vectored write
    /// with the fragment, borrowed from `data` (for a retrieve, the memory-mapped
    /// record), so the data is never copied into a buffer.
    pub async fn send_pdata_borrowed(
        &mut self,
        context_id: u8,
        is_command: bool,
        data: &[u8],
        max_pdu_length: u32,
    ) -> io::Result<()> {
        let fragment_len = if max_pdu_length == 0 {
            UNLIMITED_FRAGMENT_LEN
        } else {
            pdu::max_fragment_len(max_pdu_length)
        };
        let mut rest = data;
        let mut header = Vec::with_capacity(pdu::PDU_HEADER_LEN + pdu::PDV_HEADER_LEN);
        loop {
            let (fragment, tail) = rest.split_at(rest.len().min(fragment_len));
            header.clear();
            pdu::encode_pdata_headers(&mut header, context_id, is_command, tail.is_empty(), fragment.len());
            self.write_two(&header, fragment).await?;
            if tail.is_empty() {
                return Ok(());
            }
            rest = tail;
        }
    }

    /// Writes `first` then `second` completely, with vectored writes.
    async fn write_two(&mut self, mut first: &[u8], mut second: &[u8]) -> io::Result<()> {
        while !first.is_empty() || !second.is_empty() {
            let slices = [io::IoSlice::new(first), io::IoSlice::new(second)];
            let written = self.stream.write_vectored(&slices).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_first = written.min(first.len());
            first = &first[from_first..];
            second = &second[written - from_first..];
        }
        self.ack_owed = false;
        Ok(())
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.ack_owed = false;
        Ok(())
    }

    /// Closes the write half so the peer reads EOF after the bytes sent.
    pub async fn shutdown(&mut self) {
        // An error here means the peer is gone already, which is the goal.
        let _ = self.stream.shutdown().await;
    }
}

/// Reads the bytes waiting on `stream` into `dst`, and waits for data if
/// none are waiting.
///
/// Senders that leave Nagle's algorithm on (pynetdicom 3.0.4, dcmtk 3.6.7
/// without TCP_NODELAY=1) delay a small write until the data before it is
/// acknowledged. Linux delays that ACK by 40 to 200 ms (its TCP_DELACK_MIN and
/// TCP_DELACK_MAX): about 44 ms per instance for dcmtk storescu on loopback.
/// So before a wait, and only then, this function sets TCP_QUICKACK, which
/// sends the ACK owed for bytes read since the last write (`ack_owed`). A read
/// that finds data costs no extra system call, and neither does a wait right
/// after a response, because the response segment carried the ACK.
async fn recv(stream: &TcpStream, ack_owed: &mut bool, dst: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.try_read(dst) {
            Ok(read) => {
                *ack_owed |= read > 0;
                return Ok(read);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if std::mem::take(ack_owed) {
                    // Failing only costs latency, so the error is ignored.
                    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
                }
                stream.readable().await?;
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use nectar_codecs::pdu;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::Connection;

    /// Splits P-DATA-TF bytes into (context ID, message control header, data) per PDV.
    fn parse_pdata(mut bytes: &[u8]) -> Vec<(u8, u8, Vec<u8>)> {
        let mut pdvs = Vec::new();
        while !bytes.is_empty() {
            let header = pdu::parse_pdu_header(bytes).unwrap();
            assert_eq!(header.pdu_type, pdu::pdu_type::P_DATA_TF);
            let body = &bytes[pdu::PDU_HEADER_LEN..pdu::PDU_HEADER_LEN + header.length as usize];
            let pdv = pdu::parse_pdv_header(body).unwrap().unwrap();
            assert_eq!(pdv.data_len() + pdu::PDV_HEADER_LEN, body.len(), "one PDV per PDU");
            let control = body[5];
            pdvs.push((pdv.context_id, control, body[pdu::PDV_HEADER_LEN..].to_vec()));
            bytes = &bytes[pdu::PDU_HEADER_LEN + header.length as usize..];
        }
        pdvs
    }

    async fn sent_bytes(data: &[u8], max_pdu_length: u32) -> Vec<u8> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut conn = Connection::new(server);
        conn.send_pdata_borrowed(3, false, data, max_pdu_length).await.unwrap();
        conn.shutdown().await;
        drop(conn);
        let mut received = Vec::new();
        let mut client = client;
        client.read_to_end(&mut received).await.unwrap();
        received
    }

    #[tokio::test]
    async fn borrowed_pdata_fragments_within_max() {
        let data: Vec<u8> = (0..10u8).collect();
        // A maximum PDU length of 10 leaves 4 data bytes per PDV after its 6-byte header.
        let pdvs = parse_pdata(&sent_bytes(&data, 10).await);
        let sizes: Vec<usize> = pdvs.iter().map(|(_, _, d)| d.len()).collect();
        assert_eq!(sizes, [4, 4, 2]);
        let controls: Vec<u8> = pdvs.iter().map(|(_, c, _)| *c).collect();
        assert_eq!(controls, [0, 0, 2], "data set fragments, last bit on the final one");
        assert!(pdvs.iter().all(|(id, _, _)| *id == 3));
        let joined: Vec<u8> = pdvs.into_iter().flat_map(|(_, _, d)| d).collect();
        assert_eq!(joined, data);
    }

    #[tokio::test]
    async fn borrowed_pdata_unlimited_and_empty() {
        let data = vec![7u8; 3 * 1024 * 1024 + 10];
        let pdvs = parse_pdata(&sent_bytes(&data, 0).await);
        let sizes: Vec<usize> = pdvs.iter().map(|(_, _, d)| d.len()).collect();
        assert_eq!(sizes, [1 << 20, 1 << 20, 1 << 20, 10], "1 MiB fragments when the peer sets no maximum");

        let empty = parse_pdata(&sent_bytes(&[], 16384).await);
        assert_eq!(empty, [(3, 2, Vec::new())], "one empty last fragment");
    }
}
