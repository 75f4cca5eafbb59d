//! TEMPORARY compile stub until virtio-prefetch-wire lands (not committed).
#![allow(dead_code, unused_variables, missing_docs)]
use crate::{reassembly::ChunkInfo, verify::Ids, IncomingRequest, RequestCompletion};
use alloc::vec::Vec;
pub const DEVICE_ID: u32 = 0x5EE0;
pub const F_MANIFEST: u64 = 1;
pub const F_NEEDS_RESET: u64 = 2;
pub const CONFIG_LEN: usize = 16;
pub const CHUNK_PREFIX: usize = 40;
pub mod reject {
    pub const MALFORMED: u32 = 1;
    pub const BAD_SIGNATURE: u32 = 2;
    pub const WRONG_SESSION: u32 = 3;
    pub const REPLAY: u32 = 4;
    pub const ROLLBACK: u32 = 5;
    pub const WRONG_TASK: u32 = 6;
    pub const DIGEST_MISMATCH: u32 = 7;
    pub const TOO_LARGE: u32 = 8;
    pub const NOT_IN_MANIFEST: u32 = 9;
    pub const UNEXPECTED: u32 = 10;
}
pub mod report {
    pub const CLAIM_HIT: u32 = 1;
    pub const MISS: u32 = 2;
    pub const EVICT: u32 = 3;
    pub const REJECT: u32 = 4;
    pub const DEMAND_SERVED: u32 = 5;
}
pub struct DevConfig {
    pub max_content_len: u32,
    pub max_chunk_len: u32,
}
pub fn parse_config(b: &[u8; CONFIG_LEN]) -> DevConfig {
    unimplemented!()
}
pub fn max_object_len(max_content: u32) -> u32 {
    unimplemented!()
}
pub fn parse_chunk_prefix(b: &[u8; CHUNK_PREFIX], used_len: u32) -> Option<ChunkInfo> {
    unimplemented!()
}
pub fn parse_request(b: &[u8]) -> Option<IncomingRequest> {
    unimplemented!()
}
pub fn parse_ack(b: &[u8]) -> Option<u32> {
    unimplemented!()
}
pub fn encode_hello(nonce: &[u8; 32], epoch: u64, v: u32, n: u32) -> Vec<u8> {
    unimplemented!()
}
pub fn encode_demand(cookie: u32, app: u32, task: u64, res: u64, minv: u64) -> Vec<u8> {
    unimplemented!()
}
pub fn encode_report(kind: u32, reason: u32, ids: Ids, lat: u64) -> Vec<u8> {
    unimplemented!()
}
pub fn encode_complete(c: &RequestCompletion) -> Vec<u8> {
    unimplemented!()
}
pub struct BundleView<'a> {
    pub app_id: u32,
    pub task_id: u64,
    pub resource_id: u64,
    pub resource_version: u64,
    pub kind: u16,
    pub content: &'a [u8],
    pub content_sha384: [u8; 48],
    pub session_nonce: [u8; 32],
    pub epoch: u64,
    pub seq: u64,
    pub demand_cookie: u32,
    pub in_manifest: bool,
    pub signature: [u8; 96],
    pub statement: Vec<u8>,
}
pub struct ManifestView {
    pub session_nonce: [u8; 32],
    pub epoch: u64,
    pub seq: u64,
    pub signature: [u8; 96],
    pub statement: Vec<u8>,
    pub entries: Vec<[u8; 48]>,
}
pub enum Object<'a> {
    Bundle(BundleView<'a>),
    Manifest(ManifestView),
}
pub fn parse_object(b: &[u8], max_content: u32) -> Result<Object<'_>, u32> {
    unimplemented!()
}
