//! Functions analysts need beyond DataFusion's own (`regexp_like`, `~`,
//! `date_bin`, `date_trunc` are built in): `cidr_match(ip, 'CIDR')`.

use std::net::IpAddr;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use parsers::Network;

/// `cidr_match(ip, cidr)`: whether the address text `ip` is in the network
/// `cidr` (`10.0.0.0/8`, `2001:db8::/32`, or one address); NULL when `ip`
/// is NULL or not an address. A literal `cidr` that is not a network is an
/// error when the query is planned; one read from a column is NULL.
pub(crate) fn cidr_match() -> ScalarUDF {
    ScalarUDF::new_from_impl(CidrMatch { signature: Signature::string(2, Volatility::Immutable) })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CidrMatch {
    signature: Signature,
}

impl ScalarUDFImpl for CidrMatch {
    fn name(&self) -> &str {
        "cidr_match"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType, DataFusionError> {
        Ok(DataType::Boolean)
    }

    /// Checks a literal network once, at planning.
    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult, DataFusionError> {
        if let Some(Expr::Literal(value, _)) = args.get(1)
            && let Some(text) = literal_text(value)
        {
            text.parse::<Network>().map_err(|e| DataFusionError::Plan(format!("cidr_match: {e}")))?;
        }
        Ok(ExprSimplifyResult::Original(args))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue, DataFusionError> {
        let [ip, net] = args.args.as_slice() else {
            return Err(DataFusionError::Plan("cidr_match takes two arguments: (ip, 'CIDR')".into()));
        };
        let rows = args.number_rows;
        let ips = text(ip, rows)?;
        let nets = text(net, rows)?;
        let mut parsed: Option<(String, Option<Network>)> = None;
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            if ips.is_null(row) || nets.is_null(row) {
                out.push(None);
                continue;
            }
            let cidr = nets.value(row);
            let network = match &parsed {
                Some((text, network)) if text == cidr => *network,
                _ => {
                    let network = cidr.parse::<Network>().ok();
                    parsed = Some((cidr.to_owned(), network));
                    network
                }
            };
            out.push(network.and_then(|n| ips.value(row).trim().parse::<IpAddr>().ok().map(|ip| n.contains(ip))));
        }
        let result = BooleanArray::from(out);
        Ok(match (ip, net) {
            (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?)
            }
            _ => ColumnarValue::Array(Arc::new(result)),
        })
    }
}

fn literal_text(value: &ScalarValue) -> Option<&str> {
    match value {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => Some(s),
        _ => None,
    }
}

/// An argument as a string array of `rows` rows.
fn text(value: &ColumnarValue, rows: usize) -> Result<StringArray, DataFusionError> {
    let array: ArrayRef = value.to_array(rows)?;
    let array = cast(&array, &DataType::Utf8)?;
    array
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| DataFusionError::Execution("cidr_match: expected text".into()))
}
