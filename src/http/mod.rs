//! HTTP/1.1, both sides: request framing and answers for our server ([`request`],
//! [`response`]), and the small client for processors and peers ([`client`]).

pub mod client;
pub mod request;
pub mod response;
