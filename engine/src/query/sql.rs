//! SQL for a [`Query`] on the manifest tables.
//!
//! Keys the manifest stores become `WHERE` conditions. UID single values and
//! lists use `=` and `IN`, plain single values of other string VRs use `=`
//! and date/time ranges compare text, so the indexes apply. Every other key
//! goes through the SQL function `nectar_match(vr, key, value)`, which calls
//! [`matching::matches`]. The in-memory side calls the same function, so SQL
//! and memory match alike; the tests below check that on a manifest.

use dicom_core::VR;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;

use super::attributes::{self, Source};
use super::matching::{self, Matcher};
use super::{Key, Level, Query};

/// A statement with its parameters. Result columns: the entity's row id, the
/// row id of a representative instance (NULL when there is none), then one
/// column per entry of `returned`.
#[derive(Debug, Clone)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
    /// The keys whose values the statement returns, in column order.
    pub returned: Vec<Key>,
}

/// Registers `nectar_match` on `conn`; call once per connection before running a [`Statement`].
pub fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("nectar_match", 3, flags, |ctx| {
        let vr_text: String = ctx.get(0)?;
        let key: String = ctx.get(1)?;
        let value = match ctx.get_raw(2) {
            ValueRef::Null => None,
            ValueRef::Integer(number) => Some(number.to_string()),
            ValueRef::Real(number) => Some(number.to_string()),
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        };
        let vr = vr_from_text(&vr_text);
        let matched = match matching::parse_matcher(vr, &key) {
            Ok(matcher) => matching::matches(vr, &matcher, value.as_deref()),
            Err(_) => false,
        };
        Ok(matched)
    })
}

/// Builds the statement that selects the candidates of `query` at its level.
///
/// Keys held by the manifest at the query level or above are matched here;
/// the caller matches the rest on stored data sets.
pub fn build(query: &Query) -> Statement {
    let (entity, representative, from) = level_tables(query.level);
    let mut conditions: Vec<String> = Vec::new();
    let mut params: Vec<Value> = Vec::new();
    let mut returned = Vec::new();
    let mut columns = vec![entity.to_owned(), representative.to_owned()];

    for key in &query.keys {
        let Some(attribute) = attributes::find(key.tag) else {
            continue;
        };
        if attribute.level > query.level {
            continue;
        }
        let Source::Column {
            expression,
            single_valued,
        } = attribute.source
        else {
            continue;
        };
        if let Some(condition) = condition(key, attribute.vr, expression, single_valued, &mut params) {
            conditions.push(condition);
        }
        columns.push(expression.to_owned());
        returned.push(key.clone());
    }

    let mut sql = format!("SELECT {} FROM {from}", columns.join(", "));
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY {entity}"));
    Statement { sql, params, returned }
}

/// Returns the entity id, representative instance id and FROM clause of a level.
fn level_tables(level: Level) -> (&'static str, &'static str, &'static str) {
    match level {
        Level::Patient => (
            "p.id",
            "(SELECT x.id FROM instances x JOIN series y ON y.id = x.series_pk \
              JOIN studies z ON z.id = y.study_pk WHERE z.patient_pk = p.id ORDER BY x.id LIMIT 1)",
            "patients p",
        ),
        Level::Study => (
            "st.id",
            "(SELECT x.id FROM instances x JOIN series y ON y.id = x.series_pk \
              WHERE y.study_pk = st.id ORDER BY x.id LIMIT 1)",
            "studies st JOIN patients p ON p.id = st.patient_pk",
        ),
        Level::Series => (
            "se.id",
            "(SELECT x.id FROM instances x WHERE x.series_pk = se.id ORDER BY x.id LIMIT 1)",
            "series se JOIN studies st ON st.id = se.study_pk JOIN patients p ON p.id = st.patient_pk",
        ),
        Level::Image => (
            "i.id",
            "i.id",
            "instances i JOIN series se ON se.id = i.series_pk JOIN studies st ON st.id = se.study_pk \
             JOIN patients p ON p.id = st.patient_pk",
        ),
    }
}

/// Builds the WHERE condition of one key, or `None` for universal matching.
fn condition(key: &Key, vr: VR, expression: &str, single_valued: bool, params: &mut Vec<Value>) -> Option<String> {
    let plain_text = single_valued && is_plain_string(vr);
    match &key.matcher {
        Matcher::Universal | Matcher::Sequence(_) => None,
        Matcher::Single(value) if plain_text => {
            params.push(Value::Text(value.clone()));
            Some(format!("{expression} = ?{}", params.len()))
        }
        Matcher::List(values) if plain_text => {
            let mut placeholders = Vec::new();
            for value in values {
                params.push(Value::Text(value.clone()));
                placeholders.push(format!("?{}", params.len()));
            }
            Some(format!("{expression} IN ({})", placeholders.join(", ")))
        }
        Matcher::Range { lower, upper } if plain_text => {
            let mut parts = vec![format!("{expression} <> ''")];
            if let Some(lower) = lower {
                params.push(Value::Text(lower.clone()));
                parts.push(format!("{expression} >= ?{}", params.len()));
            }
            if let Some(upper) = upper {
                params.push(Value::Text(upper.clone()));
                let n = upper.chars().count();
                parts.push(format!("substr({expression}, 1, {n}) <= ?{}", params.len()));
            }
            Some(format!("({})", parts.join(" AND ")))
        }
        matcher => {
            params.push(Value::Text(vr.to_string().to_owned()));
            params.push(Value::Text(matcher_text(matcher)));
            let (vr_param, key_param) = (params.len() - 1, params.len());
            Some(format!("nectar_match(?{vr_param}, ?{key_param}, {expression})"))
        }
    }
}

/// String VRs compared exactly in SQL: not PN (case-insensitive) and not numbers.
fn is_plain_string(vr: VR) -> bool {
    matches!(
        vr,
        VR::UI | VR::DA | VR::TM | VR::DT | VR::CS | VR::LO | VR::SH | VR::AE
    )
}

/// Returns the key text that [`matching::parse_matcher`] turns back into `matcher`.
pub fn matcher_text(matcher: &Matcher) -> String {
    match matcher {
        Matcher::Universal | Matcher::Sequence(_) => String::new(),
        Matcher::Single(value) | Matcher::Wildcard(value) => value.clone(),
        Matcher::List(values) => values.join("\\"),
        Matcher::Range { lower, upper } => {
            format!("{}-{}", lower.as_deref().unwrap_or(""), upper.as_deref().unwrap_or(""))
        }
    }
}

fn vr_from_text(text: &str) -> VR {
    let bytes = text.as_bytes();
    if bytes.len() == 2 {
        VR::from_binary([bytes[0], bytes[1]]).unwrap_or(VR::UN)
    } else {
        VR::UN
    }
}

#[cfg(test)]
mod tests;
