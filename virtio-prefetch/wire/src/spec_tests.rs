//! Keeps `virtio-prefetch/SPEC.md` and the code in step: every layout table of the spec is
//! contiguous, adds up to the size the code encodes, and puts each field where the encoder
//! writes it; every enumerated code the spec names has the code's value.

extern crate std;

use std::format;
use std::string::String;
use std::vec::Vec;

use crate::*;

const SPEC: &str = include_str!("../../SPEC.md");

/// One row of a layout table: offset, size (None when variable), field name, the whole row.
struct Row {
    offset: usize,
    size: Option<usize>,
    name: String,
    line: String,
}

/// Every `| offset | size | field ...` table of the spec, in document order.
fn layout_tables() -> Vec<Vec<Row>> {
    let mut tables = Vec::new();
    let mut current: Option<Vec<Row>> = None;
    for line in SPEC.lines() {
        if line.starts_with("| offset | size | field") {
            current = Some(Vec::new());
            continue;
        }
        let Some(rows) = current.as_mut() else {
            continue;
        };
        if !line.starts_with('|') {
            tables.push(current.take().unwrap_or_default());
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Ok(offset) = cells[1].parse::<usize>() else {
            continue; // the `| --- |` separator
        };
        // "2 x 3" is a fixed array; "arg_len" or "48 x task_count" a variable part.
        let size = match cells[2].split_once(" x ") {
            Some((a, b)) => a
                .parse::<usize>()
                .ok()
                .zip(b.parse::<usize>().ok())
                .map(|(a, b)| a * b),
            None => cells[2].parse().ok(),
        };
        let name = cells[3]
            .trim_matches('`')
            .split([' ', '`', ':'])
            .next()
            .unwrap_or("")
            .into();
        rows.push(Row {
            offset,
            size,
            name,
            line: line.into(),
        });
    }
    if let Some(rows) = current {
        tables.push(rows);
    }
    tables
}

/// Checks one table against an encoding: contiguous rows, the fixed part's total, and each
/// named field's bytes at its documented offset.
fn check(table: &[Row], what: &str, encoded: &[u8], fixed_len: usize, fields: &[(&str, &[u8])]) {
    let mut end = 0;
    for row in table {
        assert_eq!(row.offset, end, "{what}: gap or overlap at `{}`", row.line);
        match row.size {
            Some(size) => end += size,
            None => assert_eq!(row.offset, fixed_len, "{what}: variable part not last"),
        }
    }
    assert_eq!(end.min(fixed_len), fixed_len, "{what}: fixed part size");
    assert!(end == fixed_len || table.last().is_some_and(|r| r.size.is_none()));
    for (name, bytes) in fields {
        let row = table
            .iter()
            .find(|r| r.name == *name)
            .unwrap_or_else(|| panic!("{what}: SPEC.md has no row `{name}`"));
        assert_eq!(
            &encoded[row.offset..row.offset + bytes.len()],
            *bytes,
            "{what}: `{name}` is not where SPEC.md puts it"
        );
    }
}

#[test]
fn spec_layout_tables_match_the_encoders() {
    let tables = layout_tables();
    assert_eq!(
        tables.len(),
        14,
        "config, header, 6 payloads, task entry, ack, evict, bundle, manifest, floors"
    );
    let mut buf = [0u8; 512];

    let config = DeviceConfig {
        max_content_len: 0x0101_0101,
        max_chunk_len: 0x0202_0202,
        queue_sizes: [3, 4, 5],
    };
    let encoded = config.encode();
    check(
        &tables[0],
        "config",
        &encoded,
        CONFIG_LEN,
        &[
            ("max_content_len", &0x0101_0101u32.to_le_bytes()),
            ("max_chunk_len", &0x0202_0202u32.to_le_bytes()),
            ("queue_sizes", &[3, 0, 4, 0, 5, 0]),
        ],
    );

    let demand = Message::Demand(Demand {
        app_id: 0x11,
        task_id: 0x22,
        resource_id: 0x33,
        min_version: 0x44,
    });
    let n = demand.encode(0x7777, &mut buf).unwrap();
    check(
        &tables[1],
        "header",
        &buf[..n],
        MessageHeader::LEN,
        &[
            ("magic", &MessageHeader::MAGIC.to_le_bytes()),
            ("version", &[MessageHeader::VERSION]),
            ("kind", &[MessageKind::Demand.raw()]),
            ("len", &32u32.to_le_bytes()),
            ("cookie", &0x7777u32.to_le_bytes()),
        ],
    );

    let payload = |message: &Message<'_>, buf: &mut [u8; 512]| {
        let n = message.encode(0, buf).unwrap();
        buf[MessageHeader::LEN..n].to_vec()
    };
    let request = Message::Request(Request {
        request_id: 0x0101,
        session_id: 0x0202,
        app_id: 0x0303,
        request_type: 0x0404,
        args: b"xy",
    });
    check(
        &tables[2],
        "Request",
        &payload(&request, &mut buf),
        32,
        &[
            ("request_id", &0x0101u64.to_le_bytes()),
            ("session_id", &0x0202u64.to_le_bytes()),
            ("app_id", &0x0303u32.to_le_bytes()),
            ("request_type", &0x0404u32.to_le_bytes()),
            ("arg_len", &2u32.to_le_bytes()),
            ("arguments", b"xy"),
        ],
    );
    let chunk = Message::Chunk(Chunk {
        stream_id: 0x0909,
        total_len: 100,
        offset: 90,
        data: b"abc",
    });
    check(
        &tables[3],
        "Chunk",
        &payload(&chunk, &mut buf),
        Chunk::FIXED_LEN,
        &[
            ("stream_id", &0x0909u64.to_le_bytes()),
            ("total_len", &100u32.to_le_bytes()),
            ("offset", &90u32.to_le_bytes()),
            ("chunk_len", &3u32.to_le_bytes()),
            ("bytes", b"abc"),
        ],
    );
    let hello = Message::Hello(Hello {
        nonce: [0xAB; 32],
        epoch: 0x0E,
        driver_version: 0x0D,
        staging_buffers: 0x0C,
    });
    check(
        &tables[4],
        "Hello",
        &payload(&hello, &mut buf),
        48,
        &[
            ("nonce", &[0xAB; 32]),
            ("epoch", &0x0Eu64.to_le_bytes()),
            ("driver_version", &0x0Du32.to_le_bytes()),
            ("staging_buffers", &0x0Cu32.to_le_bytes()),
        ],
    );
    check(
        &tables[5],
        "Demand",
        &payload(&demand, &mut buf),
        32,
        &[
            ("app_id", &0x11u32.to_le_bytes()),
            ("task_id", &0x22u64.to_le_bytes()),
            ("resource_id", &0x33u64.to_le_bytes()),
            ("min_version", &0x44u64.to_le_bytes()),
        ],
    );
    let report = Message::Report(Report {
        kind: ReportKind::Reject,
        reason: Some(RejectReason::NotInManifest),
        app_id: 0x51,
        task_id: 0x52,
        resource_id: 0x53,
        version: 0x54,
        latency_ns: 0x55,
    });
    check(
        &tables[6],
        "Report",
        &payload(&report, &mut buf),
        48,
        &[
            ("kind", &4u32.to_le_bytes()),
            ("reason", &9u32.to_le_bytes()),
            ("app_id", &0x51u32.to_le_bytes()),
            ("task_id", &0x52u64.to_le_bytes()),
            ("resource_id", &0x53u64.to_le_bytes()),
            ("version", &0x54u64.to_le_bytes()),
            ("latency_ns", &0x55u64.to_le_bytes()),
        ],
    );
    let tasks = [TaskTiming {
        task_id: 0x81,
        claim_ns: 0x82,
        fetch_ns: 0x83,
        work_ns: 0x84,
        hits: 0x85,
        misses: 0x86,
        result: 0x87,
    }];
    let complete = Message::Complete(Complete {
        request_id: 0x91,
        status: 0x92,
        total_ns: 0x93,
        tasks: TaskTimings::Slice(&tasks),
    });
    let encoded = payload(&complete, &mut buf);
    check(
        &tables[7],
        "Complete",
        &encoded,
        24,
        &[
            ("request_id", &0x91u64.to_le_bytes()),
            ("status", &0x92u32.to_le_bytes()),
            ("task_count", &1u32.to_le_bytes()),
            ("total_ns", &0x93u64.to_le_bytes()),
        ],
    );
    check(
        &tables[8],
        "task entry",
        &encoded[24..],
        TaskTiming::LEN,
        &[
            ("task_id", &0x81u64.to_le_bytes()),
            ("claim_ns", &0x82u64.to_le_bytes()),
            ("fetch_ns", &0x83u64.to_le_bytes()),
            ("work_ns", &0x84u64.to_le_bytes()),
            ("hits", &0x85u32.to_le_bytes()),
            ("misses", &0x86u32.to_le_bytes()),
            ("result", &0x87u64.to_le_bytes()),
        ],
    );
    let ack = Message::Ack(Ack {
        status: Status::TooLarge,
        detail: 0xA1,
    });
    check(
        &tables[9],
        "Ack",
        &payload(&ack, &mut buf),
        8,
        &[
            ("status", &5u32.to_le_bytes()),
            ("detail", &0xA1u32.to_le_bytes()),
        ],
    );
    let evict = Message::Evict(Evict {
        app_id: 0xB1,
        resource_id: 0xB2,
    });
    check(
        &tables[10],
        "Evict",
        &payload(&evict, &mut buf),
        16,
        &[
            ("app_id", &0xB1u32.to_le_bytes()),
            ("resource_id", &0xB2u64.to_le_bytes()),
        ],
    );
}

#[test]
fn spec_bundle_and_manifest_tables_match_the_encoders() {
    let tables = layout_tables();
    let header = BundleHeader {
        flags: BundleFlags::DEMANDED,
        kind: ResourceKind::Code,
        app_id: 0x61,
        task_id: 0x62,
        resource_id: 0x63,
        resource_version: 0x64,
        content_len: 0x65,
        tree_root: [0x66; 48],
        session_nonce: [0x67; 32],
        epoch: 0x68,
        seq: 0x69,
        demand_cookie: 0x6A,
        signature: [0x6B; 96],
    };
    let mut buf = [0u8; BundleHeader::LEN];
    header.encode(&mut buf).unwrap();
    check(
        &tables[11],
        "bundle",
        &buf,
        BundleHeader::LEN,
        &[
            ("magic", &BundleHeader::MAGIC.to_le_bytes()),
            ("format_version", &2u16.to_le_bytes()),
            ("flags", &2u16.to_le_bytes()),
            ("kind", &1u16.to_le_bytes()),
            ("app_id", &0x61u32.to_le_bytes()),
            ("task_id", &0x62u64.to_le_bytes()),
            ("resource_id", &0x63u64.to_le_bytes()),
            ("resource_version", &0x64u64.to_le_bytes()),
            ("content_len", &0x65u64.to_le_bytes()),
            ("tree_root", &[0x66; 48]),
            ("session_nonce", &[0x67; 32]),
            ("epoch", &0x68u64.to_le_bytes()),
            ("seq", &0x69u64.to_le_bytes()),
            ("demand_cookie", &0x6Au32.to_le_bytes()),
            ("signature", &[0x6B; 96]),
        ],
    );
    // The rows marked signed are exactly the fields of the statement after the context.
    let signed: usize = tables[11]
        .iter()
        .filter(|r| r.line.trim_end().ends_with("| yes |"))
        .map(|r| r.size.unwrap())
        .sum();
    assert_eq!(signed, BUNDLE_TBS_LEN - BUNDLE_CONTEXT.len());

    let manifest = ManifestHeader {
        count: 1,
        session_nonce: [0x71; 32],
        epoch: 0x72,
        seq: 0x73,
        signature: [0x74; 96],
    };
    let mut buf = [0u8; ManifestHeader::LEN + DIGEST_LEN];
    manifest.encode(&[[0x75; 48]], &mut buf).unwrap();
    check(
        &tables[12],
        "manifest",
        &buf,
        ManifestHeader::LEN,
        &[
            ("magic", &ManifestHeader::MAGIC.to_le_bytes()),
            ("format_version", &1u16.to_le_bytes()),
            ("count", &1u32.to_le_bytes()),
            ("session_nonce", &[0x71; 32]),
            ("epoch", &0x72u64.to_le_bytes()),
            ("seq", &0x73u64.to_le_bytes()),
            ("signature", &[0x74; 96]),
        ],
    );

    let floors = FloorsHeader {
        count: 1,
        session_nonce: [0x81; 32],
        epoch: 0x82,
        serial: 0x83,
        issued_at: 0x84,
        expires_at: 0x85,
        signature: [0x86; 96],
    };
    let floor = Floor {
        resource_id: 0x87,
        min_version: 0x88,
    };
    let mut buf = [0u8; FloorsHeader::LEN + FLOOR_ENTRY_LEN];
    floors.encode(&[floor], &mut buf).unwrap();
    check(
        &tables[13],
        "floors",
        &buf,
        FloorsHeader::LEN,
        &[
            ("magic", &FloorsHeader::MAGIC.to_le_bytes()),
            ("format_version", &1u16.to_le_bytes()),
            ("count", &1u32.to_le_bytes()),
            ("session_nonce", &[0x81; 32]),
            ("epoch", &0x82u64.to_le_bytes()),
            ("serial", &0x83u64.to_le_bytes()),
            ("issued_at", &0x84u64.to_le_bytes()),
            ("expires_at", &0x85u64.to_le_bytes()),
            ("signature", &[0x86; 96]),
        ],
    );
    assert_eq!(
        FLOORS_TBS_PREFIX_LEN - FLOORS_CONTEXT.len(),
        2 + 4 + 32 + 8 * 4,
        "the signed fields SPEC.md lists"
    );
}

#[test]
fn spec_names_every_code_with_the_code_value() {
    for kind in MessageKind::ALL {
        let row = format!("| {kind:?} | `{:#04x}` |", kind.raw());
        assert!(SPEC.contains(&row), "SPEC.md lacks `{row}`");
    }
    for status in Status::ALL {
        let item = format!("{status:?} {}", status.raw());
        assert!(SPEC.contains(&item), "SPEC.md lacks `{item}`");
    }
    for reason in RejectReason::ALL {
        let item = format!("{reason:?} {}", reason.raw());
        assert!(SPEC.contains(&item), "SPEC.md lacks `{item}`");
    }
    for item in [
        format!("`{DEVICE_ID:#06X}`"),
        format!("{:?}", core::str::from_utf8(BUNDLE_CONTEXT).unwrap())
            .trim_matches('"')
            .into(),
        format!("at most {MAX_REQUEST_ARGS}"),
        format!("at most {MAX_COMPLETE_TASKS}"),
        format!("at most {MAX_MANIFEST_ENTRIES}"),
        format!("at most {MAX_FLOOR_ENTRIES}"),
        format!("{:?}", core::str::from_utf8(FLOORS_CONTEXT).unwrap())
            .trim_matches('"')
            .into(),
        format!("at most {} MiB", MAX_CONTENT_LEN >> 20),
    ] {
        assert!(SPEC.contains(&item), "SPEC.md lacks `{item}`");
    }
}

#[test]
fn spec_states_the_chunk_tree_constants_the_code_uses() {
    // The context strings as the spec writes them (`\0` for the trailing NUL).
    let written = |context: &[u8]| {
        let text = core::str::from_utf8(&context[..context.len() - 1]).unwrap();
        std::format!("\"{text}\\0\"")
    };
    for context in [TREE_CONTEXT, BUNDLE_CONTEXT] {
        assert_eq!(context.last(), Some(&0));
        assert!(SPEC.contains(&written(context)), "{context:?}");
    }
    assert!(SPEC.contains(&std::format!("{} bytes", TREE_CONTEXT.len())));
    assert_eq!(TREE_CHUNK_LEN, 65536);
    assert!(SPEC.contains("Tree chunks are fixed at 64 KiB"));
    assert!(SPEC.contains(&std::format!("chunk_size u64 ({TREE_CHUNK_LEN})")));
    assert!(SPEC.contains(&std::format!(
        "format_version = {}",
        BundleHeader::FORMAT_VERSION
    )));
    assert!(SPEC.contains(&std::format!("at most {MAX_TREE_CHUNKS}\nchunks")));
    assert_eq!(TREE_DIGEST_LEN, 32);
    assert_eq!(TREE_ROOT_PREFIX_LEN, TREE_CONTEXT.len() + 16);
}
