//! Durations as rules write them: `500ms`, `60s`, `5m`, `1h30m`, `7d`.

/// Nanoseconds per second.
pub(crate) const SEC: i64 = 1_000_000_000;

/// Parses a duration into nanoseconds. A unit is required; parts add up.
pub(crate) fn parse(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if text == "0" {
        return Ok(0);
    }
    let mut total: i64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("bad duration '{text}': expected a number like 60s, 5m, 1h or 1d"));
        }
        let number: i64 = rest[..digits].parse().map_err(|_| format!("duration '{text}' is too long"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => SEC / 1000,
            "s" => SEC,
            "m" => 60 * SEC,
            "h" => 3600 * SEC,
            "d" => 86_400 * SEC,
            "" => return Err(format!("duration '{text}' needs a unit: ms, s, m, h or d")),
            other => return Err(format!("unknown unit '{other}' in duration '{text}': use ms, s, m, h or d")),
        };
        rest = &rest[unit_len..];
        let part = number.checked_mul(unit).ok_or_else(|| format!("duration '{text}' is too long"))?;
        total = total.checked_add(part).ok_or_else(|| format!("duration '{text}' is too long"))?;
    }
    // Keep durations far from the i64 edge so time arithmetic cannot overflow.
    if total > 3650 * 86_400 * SEC {
        return Err(format!("duration '{text}' is longer than ten years"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("60s"), Ok(60 * SEC));
        assert_eq!(parse("1h30m"), Ok(5400 * SEC));
        assert_eq!(parse("500ms"), Ok(SEC / 2));
        assert_eq!(parse("0"), Ok(0));
        assert!(parse("60").unwrap_err().contains("needs a unit"));
        assert!(parse("5w").unwrap_err().contains("unknown unit 'w'"));
        assert!(parse("m").is_err());
        assert!(parse("99999999999999999999s").is_err());
        assert!(parse("4000d").is_err());
    }
}
