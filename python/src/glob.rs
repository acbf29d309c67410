//! Shell-style patterns, as Python's `fnmatch.fnmatchcase` reads them:
//! `*` matches any run of characters (dots and slashes included), `?` one
//! character, `[abc]`, `[a-z]` and `[!abc]` one character of (or not of) a
//! set. Case-sensitive. Used by the filters at intern time only.

/// One compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    Any,
    Star,
    Set {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Pattern {
    /// Compiles `text`; an unclosed `[` matches itself, as in fnmatch.
    pub fn new(text: &str) -> Pattern {
        let chars: Vec<char> = text.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let (token, next) = match chars[i] {
                '*' => (Token::Star, i + 1),
                '?' => (Token::Any, i + 1),
                '[' => set(&chars, i).unwrap_or((Token::Char('['), i + 1)),
                c => (Token::Char(c), i + 1),
            };
            if !(token == Token::Star && tokens.last() == Some(&Token::Star)) {
                tokens.push(token);
            }
            i = next;
        }
        Pattern {
            text: text.to_owned(),
            tokens,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the whole of `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        let s: Vec<char> = s.chars().collect();
        // Greedy matching with one backtrack point (the last star): linear
        // for the patterns people write.
        let (mut p, mut i) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while i < s.len() {
            match self.tokens.get(p) {
                Some(Token::Star) => {
                    star = Some((p, i));
                    p += 1;
                }
                Some(token) if token.accepts(s[i]) => {
                    p += 1;
                    i += 1;
                }
                _ => match star {
                    Some((sp, si)) => {
                        p = sp + 1;
                        i = si + 1;
                        star = Some((sp, si + 1));
                    }
                    None => return false,
                },
            }
        }
        self.tokens[p..].iter().all(|t| *t == Token::Star)
    }
}

impl Token {
    fn accepts(&self, c: char) -> bool {
        match self {
            Token::Char(x) => *x == c,
            Token::Any => true,
            Token::Star => false,
            Token::Set { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// Parses the set starting at `chars[open]` (a `[`); `None` if unclosed.
fn set(chars: &[char], open: usize) -> Option<(Token, usize)> {
    let mut i = open + 1;
    let negated = chars.get(i) == Some(&'!');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let first = i;
    while i < chars.len() {
        let c = chars[i];
        if c == ']' && i > first {
            return Some((Token::Set { negated, ranges }, i + 1));
        }
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&e| e != ']') {
            ranges.push((c, chars[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn m(p: &str, s: &str) -> bool {
        Pattern::new(p).matches(s)
    }

    #[test]
    fn matches_like_fnmatchcase() {
        assert!(m("myapp.*", "myapp.db"));
        assert!(m("myapp.*", "myapp.db.query"));
        assert!(!m("myapp.*", "myapp"));
        assert!(!m("myapp.*", "xmyapp.db"));
        assert!(m(
            "*/site-packages/*",
            "/v/lib/python3.12/site-packages/a.py"
        ));
        assert!(m("*.py", "a/b.py"));
        assert!(m("h?llo", "hello") && !m("h?llo", "hllo"));
        assert!(m("[a-c]x", "bx") && !m("[a-c]x", "dx"));
        assert!(m("[!a-c]x", "dx") && !m("[!a-c]x", "ax"));
        assert!(m("[]]", "]"));
        assert!(m("a[", "a["));
        assert!(m("*a*b*", "xxaxxbxx") && !m("*a*b*", "xxbxxaxx"));
        assert!(m("", "") && !m("", "a"));
        assert!(m("**", "anything"));
        assert!(m("é*", "été"));
    }
}
