//! Benchmarks of the pure codecs on the receive path: PDU/PDV framing,
//! DIMSE command sets, attribute scanning, and the CRC32C the store computes.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nectar_bench::synthetic;
use nectar_codecs::command::{
    c_store_rsp, command_field, decode_command, encode_command, priority, status, Command,
};
use nectar_codecs::meta::read_file_meta;
use nectar_codecs::pdu::{
    encode_pdata_fragments, parse_pdu_header, parse_pdv_header, PDU_HEADER_LEN, PDV_HEADER_LEN,
};
use nectar_codecs::scan::{scan_attributes, DatasetEncoding};

const SOP_INSTANCE: &str = "2.25.1234567890123456789012345678901234567";

/// Walks every PDU and PDV header of a P-DATA stream; returns the data bytes.
fn walk_pdata(buf: &[u8]) -> usize {
    let mut data = 0;
    let mut pos = 0;
    while let Some(h) = parse_pdu_header(&buf[pos..]) {
        let body = &buf[pos + PDU_HEADER_LEN..pos + PDU_HEADER_LEN + h.length as usize];
        let mut at = 0;
        while let Ok(Some(pdv)) = parse_pdv_header(&body[at..]) {
            data += pdv.data_len();
            at += PDV_HEADER_LEN + pdv.data_len();
        }
        pos += PDU_HEADER_LEN + h.length as usize;
    }
    data
}

fn framing(c: &mut Criterion) {
    // 1 MiB of data set in 64 P-DATA-TF PDUs of one 16 KiB PDV each.
    let data = vec![0x5Au8; 1 << 20];
    let mut buf = Vec::new();
    encode_pdata_fragments(
        &mut buf,
        1,
        false,
        &data,
        (16 << 10) + PDV_HEADER_LEN as u32,
    );
    assert_eq!(walk_pdata(&buf), data.len());
    let mut g = c.benchmark_group("framing");
    // One element = one PDU header and the PDV header inside it.
    g.throughput(Throughput::Elements((data.len() / (16 << 10)) as u64));
    g.bench_function("pdu_pdv_headers_1MiB_16KiB_pdvs", |b| {
        b.iter(|| walk_pdata(black_box(&buf)))
    });
    g.finish();
}

fn commands(c: &mut Criterion) {
    let rq = Command {
        command_field: command_field::C_STORE_RQ,
        message_id: Some(7),
        affected_sop_class_uid: Some(synthetic::CT_IMAGE_STORAGE.into()),
        affected_sop_instance_uid: Some(SOP_INSTANCE.into()),
        priority: Some(priority::MEDIUM),
        data_set_type: 0,
        ..Command::default()
    };
    let rsp = c_store_rsp(
        7,
        synthetic::CT_IMAGE_STORAGE,
        SOP_INSTANCE,
        status::SUCCESS,
        None,
    );
    let mut g = c.benchmark_group("command");
    for (name, cmd) in [("c_store_rq", &rq), ("c_store_rsp", &rsp)] {
        let bytes = encode_command(cmd);
        assert_eq!(&decode_command(&bytes).unwrap(), cmd);
        g.bench_with_input(BenchmarkId::new("decode", name), &bytes, |b, bytes| {
            b.iter(|| decode_command(black_box(bytes)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("encode", name), cmd, |b, cmd| {
            b.iter(|| encode_command(black_box(cmd)))
        });
    }
    g.finish();
}

/// Time per data set (no throughput: the scan stops before Pixel Data, so
/// bytes per second would mostly count bytes it never reads).
fn scanning(c: &mut Criterion) {
    let mut g = c.benchmark_group("scan");
    match nectar_bench::pydicom_test_files().map(|d| d.join("CT_small.dcm")) {
        Some(path) if path.is_file() => {
            let file = std::fs::read(&path).unwrap();
            let meta = read_file_meta(&file).unwrap();
            let dataset = &file[meta.dataset_offset..];
            let enc = DatasetEncoding::for_transfer_syntax(&meta.transfer_syntax_uid).unwrap();
            assert!(scan_attributes(dataset, enc).unwrap().len() > 10);
            g.bench_function("ct_small_dcm", |b| {
                b.iter(|| scan_attributes(black_box(dataset), enc).unwrap())
            });
        }
        _ => eprintln!(
            "scan/ct_small_dcm skipped: CT_small.dcm not found (set NECTAR_TEST_FILES to \
             pydicom's data/test_files, or install pydicom)"
        ),
    }
    let dataset = synthetic::ct_dataset(true, 64 * 64 * 2);
    let enc = DatasetEncoding::ExplicitVrLittleEndian;
    assert!(scan_attributes(&dataset, enc).unwrap().len() > 20);
    g.bench_function("synthetic_explicit_vr_le", |b| {
        b.iter(|| scan_attributes(black_box(&dataset), enc).unwrap())
    });
    g.finish();
}

fn crc(c: &mut Criterion) {
    let data: Vec<u8> = (0..64 << 10).map(|i: u32| ((i * 7) >> 3) as u8).collect();
    let mut g = c.benchmark_group("crc32c");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("64KiB", |b| b.iter(|| crc32c::crc32c(black_box(&data))));
    g.finish();
}

criterion_group!(benches, framing, commands, scanning, crc);
criterion_main!(benches);
