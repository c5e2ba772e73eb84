//! One row per rule: what each direction accepts, how it frames it, and what it refuses
//! with which status. `tests/http_strict.rs` sends the same kinds of bytes through a
//! running placerd, nginx and HAProxy.

use bytes::BytesMut;
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Method, StatusCode, Version};

use super::*;

fn request(text: &[u8]) -> Result<Option<RequestHead>, Refusal> {
    parse_request(&mut BytesMut::from(text), 0)
}

fn refused(text: &[u8]) -> StatusCode {
    match request(text) {
        Err(refusal) => refusal.status,
        Ok(head) => panic!("accepted {:?}: {head:?}", String::from_utf8_lossy(text)),
    }
}

fn accepted(text: &[u8]) -> RequestHead {
    match request(text) {
        Ok(Some(head)) => head,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(text)),
    }
}

#[test]
fn request_heads_parse_with_their_framing_and_connection_semantics() {
    let mut buf = BytesMut::from(&b"POST /t/app/fn?x=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabcNEXT"[..]);
    let head = parse_request(&mut buf, 0).ok().flatten().expect("complete");
    assert_eq!((head.method, head.uri.path(), head.uri.query()), (Method::POST, "/t/app/fn", Some("x=1")));
    assert_eq!((head.framing, head.keep_alive, head.continue_expected), (BodyFraming::Length(3), true, false));
    assert_eq!(head.headers["host"], "a");
    assert!(!head.headers.contains_key("content-length"), "framing is placerd's to write");
    assert_eq!(&buf[..], b"abcNEXT", "the head was split off, the body stays buffered");

    let head = accepted(b"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: Chunked \r\nexpect: 100-continue\r\n\r\n");
    assert_eq!((head.framing, head.continue_expected), (BodyFraming::Chunked, true));
    assert!(!head.headers.contains_key("expect") && !head.headers.contains_key("transfer-encoding"));
    let head = accepted(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!((head.version, head.keep_alive, head.framing), (Version::HTTP_10, false, BodyFraming::None));
    assert!(accepted(b"GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(!accepted(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: foo, close\r\n\r\n").keep_alive);
    assert!(!accepted(b"GET / HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\n\r\n").continue_expected);
    assert_eq!(accepted(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5, 5\r\n\r\n").framing, BodyFraming::Length(5));
    assert_eq!(accepted(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n").framing, BodyFraming::None);
    assert!(request(b"GET / HTTP/1.1\r\nhost: a\r\n").expect("partial").is_none());
    // A bare LF ends a line of a head, as nginx and HAProxy accept.
    assert_eq!(accepted(b"GET /t/a/b HTTP/1.1\nhost: a\n\n").uri.path(), "/t/a/b");
}

#[test]
fn hop_by_hop_headers_are_dropped_and_connection_named_ones_kept() {
    let head = accepted(
        b"POST / HTTP/1.1\r\nhost: a\r\nconnection: close, x-private\r\nx-private: 1\r\nkeep-alive: t=5\r\nte: trailers\r\n\
          trailer: x\r\nupgrade: h2c\r\nproxy-authorization: b\r\nproxy-authenticate: c\r\nx-kept: 1\r\n\r\n",
    );
    let mut names: Vec<_> = head.headers.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["host", "x-kept", "x-private"]);
}

#[test]
fn the_target_and_host_follow_rfc_9112_section_3() {
    let head = accepted(b"GET http://fns.example:8080/t/a/b?q=1 HTTP/1.1\r\nhost: other\r\n\r\n");
    assert_eq!(
        (head.uri.to_string().as_str(), head.headers["host"].as_bytes()),
        ("/t/a/b?q=1", &b"fns.example:8080"[..])
    );
    assert_eq!(head.headers.get_all("host").iter().count(), 1);
    let head = accepted(b"GET https://fns.example HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!(
        (head.uri.path(), head.headers["host"].as_bytes()),
        ("/", &b"fns.example"[..]),
        "its authority is the Host"
    );
    assert_eq!(accepted(b"OPTIONS * HTTP/1.1\r\nhost: a\r\n\r\n").uri, "*");
    for host in ["a", "a.b-c_d~1:8080", "%41b", "[::1]", "[::1]:80", "x:", "10.0.0.1:65535"] {
        assert!(request(format!("GET / HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes()).is_ok(), "{host}");
    }
    assert!(!accepted(b"GET / HTTP/1.0\r\n\r\n").headers.contains_key("host"), "HTTP/1.0 needs none");
    assert_eq!(accepted(b"GET / HTTP/1.1\r\nhost: [::1]:80\r\n\r\n").headers["host"], "[::1]:80");
}

/// Request heads refused, with their status: each a rule of RFC 9112 as nginx and HAProxy
/// apply it.
const REFUSED_REQUESTS: &[(&[u8], u16)] = &[
    // Ambiguous or faulty framing.
    (b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1, 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: +1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: -1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: \r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 99999999999999999999\r\n\r\n", 400),
    (b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n", 400),
    // Transfer codings: chunked once and last; any other coding is not implemented.
    (b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked, gzip\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked, chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: identity\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: ,chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: \r\n\r\n", 400),
    // Host: exactly one, valid; none on HTTP/1.1.
    (b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: \r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: a b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: x/y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: user@x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: :80\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: a:b:c\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: a:8o\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: [::1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: [::1]x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: ]x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: %zz\r\n\r\n", 400),
    (b"GET http://x/t/a HTTP/1.1\r\n\r\n", 400),
    // Targets.
    (b"GET ftp://other/t/a HTTP/1.1\r\nhost: a\r\n\r\n", 400),
    (b"GET http://u@other/t/a HTTP/1.1\r\nhost: a\r\n\r\n", 400),
    (b"GET other:80 HTTP/1.1\r\nhost: a\r\n\r\n", 400),
    (b"GET * HTTP/1.1\r\nhost: a\r\n\r\n", 400),
    // Methods placerd does not forward.
    (b"CONNECT x:443 HTTP/1.1\r\nhost: x:443\r\n\r\n", 405),
    (b"TRACE / HTTP/1.1\r\nhost: a\r\n\r\n", 405),
    // Line syntax: a CR only before an LF, no space before a colon, no obs-fold, one
    // space between the parts of the request line, no NUL.
    (b"GET / HTTP/1.1\r\nhost: a\r\nx-a: b\rc\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\r\nhost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\rhost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost : a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: a\r\nx-a: b\r\n c\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\nhost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: a\r\nx-a: b\0c\r\n\r\n", 400),
    (b"GET / HTTP/1.2\r\nhost: a\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nhost: a\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),
    (b"SSH-2.0-OpenSSH\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", 400),
];

#[test]
fn ambiguous_or_malformed_request_heads_are_refused_with_their_status() {
    for &(text, status) in REFUSED_REQUESTS {
        assert_eq!(refused(text).as_u16(), status, "{:?}", String::from_utf8_lossy(text));
    }
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    assert_eq!(
        refused(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let long = format!("GET / HTTP/1.1\r\nhost: a\r\nx-long: {}\r\n\r\n", "v".repeat(MAX_HEAD_BYTES));
    assert_eq!(refused(long.as_bytes()), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

fn response(text: &str, method: Method) -> ResponseHead {
    let mut buf = BytesMut::from(format!("{text}NEXT").as_bytes());
    let head = parse_response(&mut buf, &method, 0).expect("parses").expect("complete");
    assert_eq!(&buf[..], b"NEXT", "the head was not split off whole");
    head
}

#[test]
fn response_framing_follows_rfc_9112() {
    let h = response("HTTP/1.1 200 OK\r\ncontent-length: 12\r\nx-a: b\r\n\r\n", Method::POST);
    assert_eq!((h.status, h.framing, h.keep_alive), (StatusCode::OK, Framing::Length(12), true));
    assert_eq!(h.headers["x-a"], "b");
    let h = response(
        "HTTP/1.1 200 OK\r\ndate: x\r\nconnection: keep-alive\r\nkeep-alive: timeout=5\r\ncontent-length: 1\r\nx-b: c\r\n\r\n",
        Method::GET,
    );
    let kept: Vec<_> = h.headers.keys().map(|k| k.as_str()).collect();
    assert_eq!(kept, ["x-b"], "framing, connection and date headers are placerd's to write");
    let h = response("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::HEAD);
    assert_eq!(h.headers["content-length"], "5", "a HEAD answer keeps the resource's length");
    assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
    let h = response("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", Method::GET);
    assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
    let h = response("HTTP/1.1 200 OK\r\n\r\n", Method::GET);
    assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
    let h = response("HTTP/1.1 204 No Content\r\n\r\n", Method::GET);
    assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
    let h = response("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", Method::GET);
    assert_eq!((h.framing, h.keep_alive), (Framing::Empty, false));
    assert!(!response("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", Method::GET).keep_alive);
    assert!(response("HTTP/1.0 200 OK\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\n", Method::GET).keep_alive);
    let h = response("HTTP/1.1 100 Continue\r\n\r\n", Method::POST);
    assert!(h.status.is_informational());
    assert_eq!(h.framing, Framing::Empty);
    assert_eq!(response("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n", Method::GET).framing, Framing::Length(7));
    assert_eq!(response("HTTP/1.1 200 OK\ncontent-length: 1\n\n", Method::GET).framing, Framing::Length(1));
}

/// Response heads refused (the client gets 502).
const REFUSED_RESPONSES: &[&str] = &[
    "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
    "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
    "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
    "HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n",
    "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
    "HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\n\r\n",
    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
    "HTTP/1.1 200 OK\r\nx-a: b\rc\r\n\r\n",
    "HTTP/1.1 200 OK\r\nx-a: b\r\n c\r\n\r\n",
    "HTTP/1.1 2000 OK\r\n\r\n",
    "HTTP/1.1 20x OK\r\n\r\n",
    "SSH-2.0-OpenSSH\r\n\r\n",
];

#[test]
fn bad_or_partial_response_heads_are_named() {
    assert!(
        parse_response(&mut BytesMut::from("HTTP/1.1 200 OK\r\ncontent-len"), &Method::GET, 0)
            .expect("partial")
            .is_none()
    );
    for bad in REFUSED_RESPONSES {
        let refusal = parse_response(&mut BytesMut::from(*bad), &Method::GET, 0).expect_err(bad);
        let e = std::io::Error::from(refusal);
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{bad}: {e}");
    }
    let many: String = (0..MAX_HEADERS + 1).map(|i| format!("x-{i}: v\r\n")).collect();
    assert!(
        parse_response(&mut BytesMut::from(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_str()), &Method::GET, 0)
            .is_err()
    );
}

/// Decodes `input` fed `step` bytes at a time; the body and what followed it.
fn dechunk(input: &[u8], step: usize) -> std::io::Result<(Vec<u8>, BytesMut)> {
    let mut decoder = Chunked::new();
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(b) => body.extend_from_slice(&b),
            Decoded::Done => return Ok((body, buf)),
            Decoded::NeedMore if fed >= input.len() => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Decoded::NeedMore => {
                let end = (fed + step).min(input.len());
                buf.extend_from_slice(&input[fed..end]);
                fed = end;
            }
        }
    }
}

#[test]
fn chunked_bodies_decode_however_they_arrive() {
    let input = b"5;ext=1\r\nhello\r\n1A ;x\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
    for step in [1, 2, 3, 7, 100] {
        let (body, rest) = dechunk(input, step).expect("decodes");
        assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
        assert!(rest.is_empty() || b"NEXT".starts_with(&rest), "step {step}: what follows stays");
    }
    for ok in
        [&b"5 \r\nhello\r\n0\r\n\r\n"[..], b"00000000000000005\r\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0;e\r\n\r\n"]
    {
        assert_eq!(dechunk(ok, 3).expect("decodes").0, b"hello", "{:?}", String::from_utf8_lossy(ok));
    }
}

/// Chunked bodies refused: each a rule (nginx and HAProxy refuse all but the bare LF, the
/// over-long extensions and the trailer without a colon, which are stricter here).
const REFUSED_CHUNKED: &[&[u8]] = &[
    b"+5\r\nhello\r\n0\r\n\r\n",
    b" 5\r\nhello\r\n0\r\n\r\n",
    b"5\x0b\r\nhello\r\n0\r\n\r\n",
    b"5\xc2\xa0\r\nhello\r\n0\r\n\r\n",
    b"5\r\r;ABCD\r\nhello\r\n0\r\n\r\n",
    b"5;a=\rb\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\r\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"10000000000000005\r\nhello\r\n0\r\n\r\n",
    b"zz\r\n",
    b"\r\n",
    b"3\r\nabcd\r\n0\r\n\r\n",
    b"5\nhello\n0\n\n",
    b"5\r\nhello\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
    b"5\r\nhello\r\n0\r\nx-t: a\rb\r\n\r\n",
];

#[test]
fn malformed_chunked_bodies_are_refused() {
    for bad in REFUSED_CHUNKED {
        let e = dechunk(bad, 4).expect_err(&String::from_utf8_lossy(bad));
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{:?}: {e}", String::from_utf8_lossy(bad));
    }
    let long = vec![b'1'; MAX_CHUNK_LINE + 10];
    assert_eq!(dechunk(&long, 1000).expect_err("long").kind(), std::io::ErrorKind::InvalidData);
    // Extensions are bounded per body: many small chunks cannot carry unbounded text.
    let mut many = Vec::new();
    for _ in 0..MAX_CHUNK_EXTENSIONS / 99 + 1 {
        many.extend_from_slice(format!("1;{}\r\nx\r\n", "a".repeat(98)).as_bytes());
    }
    many.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(dechunk(&many, 4096).expect_err("extensions").kind(), std::io::ErrorKind::InvalidData);
    let trailers: Vec<u8> = [&b"0\r\n"[..], &b"x-t: v\r\n".repeat(MAX_TRAILERS / 8 + 1), b"\r\n"].concat();
    assert_eq!(dechunk(&trailers, 4096).expect_err("trailers").kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn request_heads_carry_method_target_headers_and_the_body_length() {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("example"));
    headers.insert("content-length", HeaderValue::from_static("999"));
    headers.append("x-multi", HeaderValue::from_static("a"));
    headers.append("x-multi", HeaderValue::from_static("b"));
    let mut out = Vec::new();
    encode_request_head(&Method::POST, "/t/app/fn?x=1", &headers, "runner:1", 5, &mut out);
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        "POST /t/app/fn?x=1 HTTP/1.1\r\nhost: example\r\nx-multi: a\r\nx-multi: b\r\ncontent-length: 5\r\n\r\n"
    );
    let mut out = Vec::new();
    encode_request_head(&Method::GET, "/", &HeaderMap::new(), "runner:1", 0, &mut out);
    assert_eq!(out, b"GET / HTTP/1.1\r\nhost: runner:1\r\n\r\n", "a request without Host gets the runner's");
}

#[test]
fn response_heads_carry_placerd_framing_not_the_runner_one() {
    let mut headers = HeaderMap::new();
    headers.insert("content-length", HeaderValue::from_static("999"));
    headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    headers.insert("x-a", HeaderValue::from_static("b"));
    let text = |status, headers: &HeaderMap, sized, keep| {
        let mut out = Vec::new();
        encode_response_head(&mut out, status, headers, sized, keep);
        String::from_utf8(out).expect("utf-8")
    };
    let t = text(StatusCode::OK, &headers, Sized::Length(5), Keep::Open);
    assert!(t.starts_with("HTTP/1.1 200 OK\r\nx-a: b\r\ncontent-length: 5\r\ndate: "), "{t}");
    assert!(t.ends_with(" GMT\r\n\r\n"), "{t}");
    let t = text(StatusCode::BAD_GATEWAY, &HeaderMap::new(), Sized::Chunked, Keep::Close);
    assert!(t.starts_with("HTTP/1.1 502 Bad Gateway\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"), "{t}");
    assert!(text(StatusCode::OK, &headers, Sized::HeadAnswer, Keep::Announced).contains("content-length: 999\r\n"));
    let t = text(StatusCode::OK, &headers, Sized::Unframed, Keep::Close);
    assert!(!t.contains("content-length") && !t.contains("transfer-encoding"), "HTTP/1.0, unknown length: {t}");
    assert!(
        text(StatusCode::OK, &HeaderMap::new(), Sized::Length(0), Keep::Announced)
            .contains("connection: keep-alive\r\n")
    );
    for n in [0, 7, 10, 12345, u64::MAX] {
        let mut out = Vec::new();
        encode::decimal(&mut out, n);
        assert_eq!(out, n.to_string().as_bytes());
    }
}
