//! Request framing for the `http_hello` example: where one HTTP/1.1 request ends in the
//! bytes received so far, and what the connection must do with it. The head is parsed by
//! `httparse`; this module adds the limits a server needs against hostile input, so that
//! what a connection buffers is bounded by [`MAX_REQUEST`] whatever it is sent.
//!
//! The file is a module of the example, of the smoke tests and of the fuzz target
//! `fuzz/fuzz_targets/http_hello.rs` (all include it by path); it depends on nothing but
//! `httparse`.

/// Largest request head (request line and headers) accepted: more is a 431.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header fields in one request: more is a 431.
pub const MAX_HEADERS: usize = 64;
/// Largest request body accepted (`Content-Length`): more is a 413.
pub const MAX_BODY: usize = 1024 * 1024;
/// Empty lines ignored before a request line (RFC 9112, 2.2 asks for at least one): more
/// is a 400, so a flood of CRLFs is answered instead of buffered.
pub const MAX_EMPTY_LINES: usize = 8;
/// The most bytes [`parse`] ever answers [`Parse::Partial`] for: a connection never needs
/// to buffer more than this (plus one read) to frame a request.
pub const MAX_REQUEST: usize = 2 * MAX_EMPTY_LINES + MAX_HEAD + MAX_BODY;

/// One request, framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// `HEAD`: answer without a body.
    pub head: bool,
    /// The request target (`/`, `/index.html`, ...).
    pub target: &'a [u8],
    /// The connection stays open after the answer.
    pub keep_alive: bool,
    /// Bytes of the request: leading empty lines, head, body.
    pub len: usize,
}

/// What the bytes at the start of a buffer are.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse<'a> {
    /// Not all of the request is here yet.
    Partial,
    /// A whole request.
    Request(Request<'a>),
    /// Malformed, over a limit or unsupported: the status to answer with, before closing
    /// (nothing after it can be framed).
    Bad(u16),
}

/// Frames the request at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parse<'_> {
    let mut skip = 0;
    let mut empty_lines = 0;
    loop {
        let rest = &buf[skip..];
        let eol = if rest.starts_with(b"\r\n") {
            2
        } else if rest.starts_with(b"\n") {
            1
        } else if rest == b"\r" {
            return Parse::Partial;
        } else {
            break;
        };
        empty_lines += 1;
        if empty_lines > MAX_EMPTY_LINES {
            return Parse::Bad(400);
        }
        skip += eol;
    }
    let rest = &buf[skip..];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(rest) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if rest.len() > MAX_HEAD => return Parse::Bad(431),
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parse::Bad(431),
        Err(httparse::Error::Version) if names_another_version(rest) => return Parse::Bad(505),
        Err(_) => return Parse::Bad(400),
    };
    if head_len > MAX_HEAD {
        return Parse::Bad(431);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parse::Bad(400);
    };
    let mut content_length: Option<usize> = None;
    let (mut close, mut keep_alive) = (false, false);
    for header in req.headers.iter() {
        let value = trim(header.value);
        if header.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = parse_length(value) else {
                return Parse::Bad(400);
            };
            if content_length.is_some_and(|m| m != n) {
                return Parse::Bad(400);
            }
            content_length = Some(n);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked bodies are not supported.
            return Parse::Bad(501);
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let body = content_length.unwrap_or(0);
    if body > MAX_BODY {
        return Parse::Bad(413);
    }
    let len = skip + head_len + body;
    if buf.len() < len {
        return Parse::Partial;
    }
    Parse::Request(Request {
        head: method == "HEAD",
        target: target.as_bytes(),
        keep_alive: !close && (version == 1 || keep_alive),
        len,
    })
}

/// Whether the request line's third word is an HTTP version (`HTTP/2.0`): then the
/// version is unsupported (505) rather than the line malformed (400).
fn names_another_version(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    line.split(|&b| b == b' ')
        .nth(2)
        .is_some_and(|v| v.starts_with(b"HTTP/"))
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b" \t".contains(b))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b" \t".contains(b))
        .map_or(start, |i| i + 1);
    &s[start..end]
}

fn parse_length(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(buf: &[u8]) -> Request<'_> {
        match parse(buf) {
            Parse::Request(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn bad(buf: &[u8]) -> u16 {
        match parse(buf) {
            Parse::Bad(s) => s,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    #[test]
    fn parses_heads_bodies_and_connection_options() {
        let r = request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET");
        assert_eq!(
            (r.target, r.keep_alive, r.len, r.head),
            (&b"/"[..], true, 27, false)
        );
        let r = request(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET");
        assert_eq!((r.target, r.len), (&b"/x"[..], 42));
        assert!(!request(b"GET / HTTP/1.1\r\nConnection: Keep-Alive, close\r\n\r\n").keep_alive);
        assert!(!request(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(request(b"HEAD / HTTP/1.1\r\n\r\n").head);
        assert_eq!(request(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n").len, 22);
    }

    #[test]
    fn waits_for_the_whole_request() {
        let full = b"\r\nPOST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Parse::Partial, "cut at {cut}");
        }
        assert_eq!(request(full).len, full.len());
    }

    #[test]
    fn refuses_what_it_cannot_frame() {
        assert_eq!(bad(b"GET /\r\n\r\n"), 400);
        assert_eq!(bad(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(bad(b"GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n"), 400);
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            501
        );
        assert_eq!(bad(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), 400);
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            413
        );
    }

    #[test]
    fn bounds_what_it_waits_for() {
        // A head that never ends.
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.resize(MAX_HEAD, b'a');
        assert_eq!(parse(&head), Parse::Partial);
        head.push(b'a');
        assert_eq!(bad(&head), 431);
        // A complete head over the limit.
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD + 10, b'a');
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(bad(&long), 431);
        // Too many header fields.
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(bad(many.as_bytes()), 431);
        // A flood of empty lines: a few are ignored, more are refused.
        assert_eq!(parse(&b"\r\n".repeat(MAX_EMPTY_LINES)), Parse::Partial);
        assert_eq!(bad(&b"\r\n".repeat(MAX_EMPTY_LINES + 1)), 400);
        assert_eq!(bad(&b"\n".repeat(100_000)), 400);
    }

    /// The promises the fuzz target checks (`fuzz/fuzz_targets/http_hello.rs`), on
    /// mutations of a few requests, so `cargo test` checks them too.
    #[test]
    fn keeps_its_promises_on_mutated_requests() {
        let samples: [&[u8]; 5] = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\r\n\nPOST /p HTTP/1.0\r\nContent-Length: 4\r\nConnection: keep-alive\r\n\r\nbody",
            b"HEAD /h HTTP/1.1\nA: b\n\n",
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nX:\r\n\r\n",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) as usize) % n.max(1)
        };
        let alphabet = b"\r\n :/ HTTP1.0GETContent-Length9x";
        for round in 0..20_000 {
            let mut data = samples[round % samples.len()].to_vec();
            for _ in 0..1 + next(4) {
                let at = next(data.len() + 1);
                let byte = alphabet[next(alphabet.len())];
                match next(3) {
                    0 if at < data.len() => data[at] = byte,
                    1 if at < data.len() => {
                        data.remove(at);
                    }
                    _ => data.insert(at, byte),
                }
            }
            match parse(&data) {
                Parse::Request(r) => {
                    assert!(r.len > 0 && r.len <= data.len(), "{data:?}");
                    assert_eq!(parse(&data[..r.len]), Parse::Request(r), "{data:?}");
                    assert_eq!(parse(&data[..r.len - 1]), Parse::Partial, "{data:?}");
                }
                Parse::Partial => assert!(data.len() < MAX_REQUEST),
                Parse::Bad(status) => assert!(matches!(status, 400 | 413 | 431 | 501 | 505)),
            }
        }
    }
}
