//! Removes the `debug_redact` field option from proto text before `protoc` sees it.
//!
//! cri-api v0.34+ marks the registry credentials in `AuthConfig` with `[debug_redact = true]`, an
//! option `protoc` knows only from 3.22 on; Debian's 3.21 refuses the whole file. The option only
//! tells code generators to hide the field when printing, which prost does not do anyway: the crate
//! hides those fields by its own `Debug` (see `lib.rs`). The vendored file stays byte-identical to
//! upstream; `build.rs` compiles the cleaned copy this produces.
//!
//! Compiled twice: into `build.rs` (which uses it) and into the library's tests (which check it).

/// A proto file's text with every `debug_redact` option removed, and the fields that carried one.
#[derive(Debug, PartialEq, Eq)]
pub struct Stripped {
    pub text: String,
    /// `Message.field` for each field the option was removed from, in file order.
    pub fields: Vec<String>,
}

/// Strips `debug_redact` from the field option lists (`[...]`) of `proto`. Comments are left as they
/// are. An option list that held nothing else disappears with the space before it, so
/// `string password = 2 [debug_redact = true];` becomes `string password = 2;`.
///
/// Fails where the option appears in a form this does not rewrite (an option list spread over
/// lines, say), so a later cri-api cannot slip past with the option still in and a confusing
/// `protoc` error, or with it silently dropped from a field the `Debug` impl does not hide.
pub fn strip_debug_redact(proto: &str) -> Result<Stripped, String> {
    let mut text = String::with_capacity(proto.len());
    let mut fields = Vec::new();
    let mut scopes: Vec<Option<String>> = Vec::new();
    let mut in_block_comment = false;
    for (n, line) in proto.split_inclusive('\n').enumerate() {
        let (code, rest) = split_code(line, &mut in_block_comment);
        let rewritten = strip_line(code, &scopes, &mut fields)
            .map_err(|e| format!("line {}: {e}: {}", n + 1, line.trim_end()))?;
        track_scopes(&rewritten, &mut scopes);
        text.push_str(&rewritten);
        text.push_str(rest);
    }
    Ok(Stripped { text, fields })
}

/// Splits a line into the code before any comment and the rest (comment and line end). A block
/// comment's inside counts as comment, also across lines; a line a block comment ends on is all
/// comment (cri-api puts no code after one).
fn split_code<'a>(line: &'a str, in_block_comment: &mut bool) -> (&'a str, &'a str) {
    if *in_block_comment {
        *in_block_comment = !line.contains("*/");
        return ("", line);
    }
    let at = [line.find("//"), line.find("/*")]
        .into_iter()
        .flatten()
        .min();
    if let Some(at) = at {
        if line[at..].starts_with("/*") {
            *in_block_comment = !line[at..].contains("*/");
        }
        return line.split_at(at);
    }
    let body = line.trim_end_matches(['\n', '\r']);
    line.split_at(body.len())
}

/// Follows the braces so a stripped field can be named with the message it is in: each `{` opens
/// a scope, named when it follows `message X`.
fn track_scopes(code: &str, scopes: &mut Vec<Option<String>>) {
    let spaced = code.replace('{', " { ").replace('}', " } ");
    let mut pending = None;
    let mut words = spaced.split_whitespace();
    while let Some(w) = words.next() {
        match w {
            "message" => pending = words.next().map(str::to_owned),
            "{" => scopes.push(pending.take()),
            "}" => {
                scopes.pop();
            }
            _ => {}
        }
    }
}

fn strip_line(
    code: &str,
    scopes: &[Option<String>],
    fields: &mut Vec<String>,
) -> Result<String, String> {
    if !code.contains("debug_redact") {
        return Ok(code.to_owned());
    }
    let (Some(open), Some(close)) = (code.find('['), code.rfind(']')) else {
        return Err("debug_redact outside a one-line field option list".into());
    };
    if close < open
        || code[..open].contains("debug_redact")
        || code[close..].contains("debug_redact")
    {
        return Err("debug_redact outside a one-line field option list".into());
    }
    let kept: Vec<&str> = code[open + 1..close]
        .split(',')
        .map(str::trim)
        .filter(|opt| opt.split('=').next().map(str::trim) != Some("debug_redact"))
        .collect();
    let field = code[..open]
        .split('=')
        .next()
        .and_then(|decl| decl.split_whitespace().last())
        .ok_or("no field name before the option list")?;
    let message = scopes
        .iter()
        .rev()
        .find_map(Option::as_deref)
        .ok_or("debug_redact outside a message")?;
    fields.push(format!("{message}.{field}"));
    let before = code[..open].trim_end();
    let after = &code[close + 1..];
    Ok(if kept.is_empty() {
        format!("{before}{after}")
    } else {
        format!("{before} [{}]{after}", kept.join(", "))
    })
}
