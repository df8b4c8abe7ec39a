#![no_main]
//! Fuzzes the rule compiler with arbitrary text and, whenever the text
//! compiles, runs the rules over a fixed stream of events covering every
//! condition kind: neither may panic, and the engine must stay consistent.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parsers::{DeviceParsers, Event, EventTime, OrgId, ParserConfig};

fn stream() -> &'static [Event] {
    static EVENTS: OnceLock<Vec<Event>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let parser = ParserConfig { timezone: Some("UTC".into()), year: Some(2024), ..Default::default() }
            .validate_and_build()
            .unwrap();
        let devices = DeviceParsers::load(None).unwrap();
        let lines = [
            "Nov 22 10:00:00 h sshd[1]: Failed password for root from 10.0.0.1 port 1 ssh2",
            "Nov 22 10:00:01 h sshd[1]: message repeated 4 times: [ Failed password for root from 10.0.0.1 port 1 ssh2]",
            "Nov 22 10:00:02 h sshd[1]: Accepted password for root from 10.0.0.1 port 2 ssh2",
            "Nov 22 10:00:03 h usermod[2]: add 'bob' to group 'sudo'",
            "CEF:0|A|B|1|2|approve|3|suser=bob act=approved src=10.0.0.1 dpt=22 rt=1732269604000",
            "<4>Nov 22 09:59:59 gw kernel: [UFW BLOCK] IN=eth0 OUT= SRC=10.0.0.1 DST=10.0.0.2 LEN=1 PROTO=TCP SPT=1 DPT=23",
            "garbage \u{0}\u{ff}",
        ];
        let now = EventTime::from_unix(1_732_300_000, 0, 0);
        let mut events = Vec::new();
        for (i, line) in lines.iter().cycle().take(40).enumerate() {
            let mut e = parser.parse(Bytes::from(line.as_bytes().to_vec()), now);
            devices.classify(&mut e);
            e.org_id = Some(OrgId(2 + (i % 3) as u32));
            events.push(e);
        }
        events
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut compiler = rules::Compiler::new();
    compiler.add_source("fuzz.yaml", &text);
    let Ok((set, _)) = compiler.finish() else { return };
    let mut engine = rules::Engine::new(Arc::new(set), rules::EngineConfig::default());
    let mut out = Vec::new();
    for (id, event) in stream().iter().enumerate() {
        engine.process(id as u64, event, &mut out);
    }
    engine.flush(&mut out);
    for incident in &out {
        assert!(incident.count >= 1);
        assert!(incident.first_seen.unix_nanos() <= incident.last_seen.unix_nanos());
        assert!(incident.event_ids.len() <= 100);
    }
    let stats = engine.stats();
    assert_eq!(stats.buffered, 0);
});
