//! Query results as JSON: a column list and rows of values. Numbers stay
//! numbers, times are RFC 3339 (UTC), `raw` and other binary columns are
//! text (invalid UTF-8 replaced, as `vigil parse` prints it).

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, LargeBinaryArray, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::Serialize;
use serde_json::Value;

/// A result column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type, as DataFusion names it (`Utf8`, `Int64`, `Timestamp(ns, "UTC")`…).
    #[serde(rename = "type")]
    pub data_type: String,
}

/// The columns of a result schema.
pub(crate) fn columns(schema: &datafusion::arrow::datatypes::Schema) -> Vec<Column> {
    use datafusion::arrow::datatypes::DataType;
    schema
        .fields()
        .iter()
        .map(|f| {
            // Text is read as string views, an engine detail: it is text.
            let data_type = match f.data_type() {
                DataType::Utf8View => DataType::Utf8,
                other => other.clone(),
            };
            Column { name: f.name().clone(), data_type: data_type.to_string() }
        })
        .collect()
}

/// Appends the rows of `batch` (at most `room` of them) to `rows`.
pub(crate) fn append_rows(
    batch: &RecordBatch,
    room: usize,
    rows: &mut Vec<Vec<Value>>,
) -> Result<(), datafusion::error::DataFusionError> {
    let take = batch.num_rows().min(room);
    if take == 0 {
        return Ok(());
    }
    let columns: Vec<Vec<Value>> =
        batch.columns().iter().map(|c| values(c, take)).collect::<Result<_, datafusion::error::DataFusionError>>()?;
    for row in 0..take {
        rows.push(columns.iter().map(|c| c[row].clone()).collect());
    }
    Ok(())
}

fn numbers<T>(array: &ArrayRef, take: usize) -> Vec<Value>
where
    T: datafusion::arrow::datatypes::ArrowPrimitiveType,
    T::Native: Into<Value>,
{
    let a = array.as_primitive::<T>();
    (0..take).map(|i| if a.is_null(i) { Value::Null } else { a.value(i).into() }).collect()
}

fn floats<T>(array: &ArrayRef, take: usize) -> Vec<Value>
where
    T: datafusion::arrow::datatypes::ArrowPrimitiveType,
    T::Native: Into<f64>,
{
    let a = array.as_primitive::<T>();
    (0..take)
        .map(|i| {
            if a.is_null(i) {
                Value::Null
            } else {
                serde_json::Number::from_f64(a.value(i).into()).map_or(Value::Null, Value::Number)
            }
        })
        .collect()
}

/// The first `take` values of a column.
fn values(array: &ArrayRef, take: usize) -> Result<Vec<Value>, datafusion::error::DataFusionError> {
    Ok(match array.data_type() {
        DataType::Null => vec![Value::Null; take],
        DataType::Boolean => {
            let a = array
                .as_any()
                .downcast_ref::<BooleanArray>()
                .map(|a| (0..take).map(|i| a.is_valid(i).then(|| a.value(i))));
            a.map(|it| it.map(|v| v.map_or(Value::Null, Value::Bool)).collect()).unwrap_or_default()
        }
        DataType::Int8 => numbers::<Int8Type>(array, take),
        DataType::Int16 => numbers::<Int16Type>(array, take),
        DataType::Int32 => numbers::<Int32Type>(array, take),
        DataType::Int64 => numbers::<Int64Type>(array, take),
        DataType::UInt8 => numbers::<UInt8Type>(array, take),
        DataType::UInt16 => numbers::<UInt16Type>(array, take),
        DataType::UInt32 => numbers::<UInt32Type>(array, take),
        DataType::UInt64 => numbers::<UInt64Type>(array, take),
        DataType::Float32 => floats::<Float32Type>(array, take),
        DataType::Float64 => floats::<Float64Type>(array, take),
        DataType::Binary => {
            let a = array.as_any().downcast_ref::<BinaryArray>();
            a.map(|a| (0..take).map(|i| bytes(a.is_valid(i).then(|| a.value(i)))).collect()).unwrap_or_default()
        }
        DataType::LargeBinary => {
            let a = array.as_any().downcast_ref::<LargeBinaryArray>();
            a.map(|a| (0..take).map(|i| bytes(a.is_valid(i).then(|| a.value(i)))).collect()).unwrap_or_default()
        }
        DataType::BinaryView => {
            let a = array.as_binary_view();
            (0..take).map(|i| bytes(a.is_valid(i).then(|| a.value(i)))).collect()
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(..) => {
            let text = cast(array, &DataType::Utf8)?;
            let a = text.as_any().downcast_ref::<StringArray>();
            a.map(|a| (0..take).map(|i| if a.is_valid(i) { Value::from(a.value(i)) } else { Value::Null }).collect())
                .unwrap_or_default()
        }
        DataType::Timestamp(unit, _) => {
            let utc = DataType::Timestamp(*unit, Some("UTC".into()));
            let array = cast(array, &utc)?;
            let format = match unit {
                TimeUnit::Second => "%Y-%m-%dT%H:%M:%SZ",
                TimeUnit::Millisecond => "%Y-%m-%dT%H:%M:%S%.3fZ",
                TimeUnit::Microsecond => "%Y-%m-%dT%H:%M:%S%.6fZ",
                TimeUnit::Nanosecond => "%Y-%m-%dT%H:%M:%S%.9fZ",
            };
            displayed(&array, take, &FormatOptions::default().with_timestamp_tz_format(Some(format)))?
        }
        _ => displayed(array, take, &FormatOptions::default())?,
    })
}

fn bytes(value: Option<&[u8]>) -> Value {
    value.map_or(Value::Null, |b| Value::from(String::from_utf8_lossy(b).into_owned()))
}

/// Values as DataFusion displays them (dates, intervals, lists…).
fn displayed(
    array: &ArrayRef,
    take: usize,
    options: &FormatOptions<'_>,
) -> Result<Vec<Value>, datafusion::error::DataFusionError> {
    let formatter = ArrayFormatter::try_new(array.as_ref(), options)?;
    Ok((0..take)
        .map(|i| if array.is_null(i) { Value::Null } else { Value::from(formatter.value(i).to_string()) })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{TimestampNanosecondArray, UInt64Array};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn values_keep_their_json_type() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::UInt64, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), true),
            Field::new("s", DataType::Utf8, true),
            Field::new("raw", DataType::Binary, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(UInt64Array::from(vec![Some(u64::MAX), None])),
                Arc::new(
                    TimestampNanosecondArray::from(vec![Some(1_796_083_200_123_456_789), None]).with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(BinaryArray::from(vec![Some(b"ok \xff".as_ref()), None])),
            ],
        )
        .unwrap();
        let mut rows = Vec::new();
        append_rows(&batch, 10, &mut rows).unwrap();
        assert_eq!(
            rows[0],
            vec![
                Value::from(u64::MAX),
                Value::from("2026-12-01T00:00:00.123456789Z"),
                Value::from("a"),
                Value::from("ok \u{fffd}"),
            ]
        );
        assert!(rows[1].iter().all(Value::is_null));
        assert_eq!(columns(&schema)[1].data_type, "Timestamp(ns, \"UTC\")");
        let mut rows = Vec::new();
        append_rows(&batch, 1, &mut rows).unwrap();
        assert_eq!(rows.len(), 1);
    }
}
