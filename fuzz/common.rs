// Shared by the parser fuzz targets: parse with a forced format and check
// the invariants every event must keep, whatever the bytes.
use bytes::Bytes;
use parsers::{Event, EventTime, InputFormat, ParserConfig};

pub fn check(data: &[u8], format: InputFormat) -> Event {
    let parser = ParserConfig { format, ..Default::default() }.validate_and_build().unwrap();
    let now = EventTime::from_unix(1_763_800_000, 0, 0);
    let line = Bytes::copy_from_slice(data);
    let view = parser.parse_view(&line);
    let event = parser.to_event(&view, &line, now, parser.zone());
    // Nothing accepted is altered: raw is byte-exact.
    assert_eq!(&event.raw[..], data);
    // A raw event always says why.
    assert_eq!(event.format == parsers::Format::Raw, event.parse_error.is_some());
    if let Some(f) = event.facility {
        assert!(f <= 23);
    }
    if let Some(s) = event.severity {
        assert!(s <= 7);
    }
    let json = event.to_json();
    assert!(json.starts_with('{') && json.ends_with('}'));
    event
}
