//! The cron expressions of `backups.cron`, parsed as PocketBase accepts them: the settings
//! refuse what does not parse, the schedule runs what does.

/// Why a cron expression was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

/// Parses a cron expression as PocketBase accepts it: five numeric fields (minute hour
/// day-of-month month day-of-week) with `*`, ranges, steps and lists, or one of the macros
/// `@yearly @annually @monthly @weekly @daily @midnight @hourly`. Both day fields must match
/// (PocketBase's rule, not vixie cron's "either").
pub fn parse_cron(expr: &str) -> Result<croner::Cron, CronError> {
    let expr = expr.trim();
    let expr = if expr.eq_ignore_ascii_case("@midnight") { "@daily" } else { expr };
    let is_macro = expr.starts_with('@');
    // croner also takes names (MON, JAN) and Quartz extensions (L, W, #, ?); PocketBase does not.
    if !is_macro && !expr.chars().all(|c| c.is_ascii_digit() || " \t*/,-".contains(c)) {
        return Err(CronError("only digits and * / , - are allowed in the five fields".into()));
    }
    if !is_macro && expr.split_whitespace().count() != 5 {
        return Err(CronError("a cron expression has exactly five fields".into()));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| CronError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_fields_and_macros_parse_like_upstream() {
        for ok in ["* * * * *", "*/5 1-3 * * 1,3,5", "0 0 1 1 *", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly", " 0 3 * * * "] {
            assert!(parse_cron(ok).is_ok(), "{ok}");
        }
        for bad in ["", "* * * *", "0 * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "0 0 * * MON", "0 0 L * *", "@every", "@reboot", "x"] {
            assert!(parse_cron(bad).is_err(), "{bad}");
        }
    }
}
