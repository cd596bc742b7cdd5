/// Quotes a value for a one-line message: `'web-7'`.
///
/// Certificate contents are attacker-controlled, so control characters, quotes and backslashes are escaped
/// (`\n`, `\'`, `\u{7f}`) and the line can never be split or forged. With `limit`, a longer value is cut
/// after that many characters and ends in `…`.
public func singleQuoted(_ value: String, limit: Int = .max) -> String {
    "'" + escapedForLog(value, limit: limit) + "'"
}

/// `value` with control characters, `'` and `\` escaped, cut after `limit` characters (then ending in `…`).
public func escapedForLog(_ value: String, limit: Int = .max) -> String {
    var out = ""
    var count = 0
    for scalar in value.unicodeScalars {
        if count == limit {
            out += "…"
            break
        }
        count += 1
        switch scalar {
        case "'": out += "\\'"
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value) || scalar == "\u{2028}" || scalar == "\u{2029}" {
                out += "\\u{" + String(scalar.value, radix: 16) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out
}

/// A JSON string literal for `value`: quotes, backslashes and control characters escaped (plus U+2028/2029,
/// which some JSON consumers treat as line breaks), so a JSON log line can never be split or forged.
public func jsonString(_ value: String) -> String {
    var out = "\""
    out.reserveCapacity(value.utf8.count + 2)
    for scalar in value.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 || scalar.value == 0x7f || scalar == "\u{2028}" || scalar == "\u{2029}" {
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}
