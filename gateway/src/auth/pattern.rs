//! Room patterns: the permission language of tokens and of the `auth.*_rooms` settings.
//!
//! A pattern is split into segments at `:` like a room name. A `*` segment matches exactly one
//! whole segment of the room, a final `**` matches one or more further segments, and every other
//! segment matches itself (docs/protocol.md, "Room patterns"). Patterns are parsed and validated once,
//! when a token or the configuration is read, so that matching, which runs on every `join` and
//! `publish`, is a cheap allocation-free walk over the room name.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Why a pattern was refused, with the pattern itself.
///
/// The pattern is kept so that configuration errors can name it. When the pattern came from a
/// token, the authenticator reports only [`PatternError::reason`] (see
/// [`AuthError::InvalidPattern`](super::AuthError::InvalidPattern)), because error messages must
/// not echo token contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid room pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pattern: String,
    reason: &'static str,
}

impl PatternError {
    fn new(pattern: &str, reason: &'static str) -> Self {
        Self {
            pattern: pattern.to_owned(),
            reason,
        }
    }

    /// The refused pattern, as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// A short, fixed explanation (never contains the pattern), safe to send to clients.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// One parsed segment. Literals are byte ranges into [`RoomPattern::source`], so a pattern costs
/// one string allocation plus this small vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    /// Matches a room segment equal to `source[start..end]`.
    Literal { start: usize, end: usize },
    /// `*`: exactly one whole segment.
    One,
    /// A final `**`: one or more further segments.
    Rest,
}

/// A validated room pattern such as `chat:*` or `user:alice:**`.
///
/// Build one with [`RoomPattern::parse`] (or `str::parse`); test rooms with
/// [`RoomPattern::matches`]. Two patterns are equal when they are written the same way.
#[derive(Clone)]
pub struct RoomPattern {
    source: Box<str>,
    segments: Box<[Segment]>,
    /// No wildcard at all: matching is a plain string comparison.
    literal: bool,
}

/// Whether `byte` may appear in a room name segment (the room alphabet of docs/protocol.md minus the
/// `:` separator).
fn is_room_segment_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'@' | b'=' | b'+' | b'/')
}

impl RoomPattern {
    /// Parses and validates `pattern`.
    ///
    /// # Errors
    /// The pattern is empty, has an empty segment (`chat:`, `:x`, `a::b`), has `**` anywhere but
    /// as its last segment, has `*` inside a segment (`a*`, `***`), or has a byte outside the room
    /// alphabet `A-Z a-z 0-9 _ - : @ = + /`.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::new(pattern, "empty pattern"));
        }
        let segment_count = pattern.split(':').count();
        let mut segments = Vec::with_capacity(segment_count);
        let mut start = 0;
        for (index, segment) in pattern.split(':').enumerate() {
            let end = start + segment.len();
            let parsed = match segment {
                "" => return Err(PatternError::new(pattern, "empty segment")),
                "*" => Segment::One,
                "**" if index + 1 == segment_count => Segment::Rest,
                "**" => return Err(PatternError::new(pattern, "`**` must be the last segment")),
                _ if segment.contains('*') => {
                    return Err(PatternError::new(pattern, "`*` must be a whole segment"));
                }
                _ if !segment.bytes().all(is_room_segment_byte) => {
                    return Err(PatternError::new(
                        pattern,
                        "character outside the room alphabet",
                    ));
                }
                _ => Segment::Literal { start, end },
            };
            segments.push(parsed);
            // Skip the `:` that follows this segment.
            start = end + 1;
        }
        let literal = segments
            .iter()
            .all(|segment| matches!(segment, Segment::Literal { .. }));
        Ok(Self {
            source: pattern.into(),
            segments: segments.into_boxed_slice(),
            literal,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether this pattern matches every room (`**`), which lets [`Patterns`] skip matching.
    pub fn matches_everything(&self) -> bool {
        matches!(*self.segments, [Segment::Rest])
    }

    /// Whether `room` matches this pattern. Allocation-free.
    ///
    /// `room` is expected to be a valid room name (rooms are validated before permissions); as a
    /// safeguard, wildcards never match an empty segment.
    pub fn matches(&self, room: &str) -> bool {
        if self.literal {
            return room == &*self.source;
        }
        let mut parts = room.split(':');
        for segment in &self.segments {
            match *segment {
                Segment::Literal { start, end } => match parts.next() {
                    Some(part) if part == &self.source[start..end] => {}
                    _ => return false,
                },
                Segment::One => match parts.next() {
                    Some(part) if !part.is_empty() => {}
                    _ => return false,
                },
                Segment::Rest => {
                    let mut any = false;
                    for part in parts.by_ref() {
                        if part.is_empty() {
                            return false;
                        }
                        any = true;
                    }
                    return any;
                }
            }
        }
        parts.next().is_none()
    }
}

impl FromStr for RoomPattern {
    type Err = PatternError;

    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        Self::parse(pattern)
    }
}

impl PartialEq for RoomPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for RoomPattern {}

impl fmt::Debug for RoomPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RoomPattern").field(&&*self.source).finish()
    }
}

impl fmt::Display for RoomPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A set of room patterns: a permission such as "may join" or "may publish".
///
/// Cloning is cheap (a shared slice), because every connection of a user holds the same
/// configured defaults. An empty set allows nothing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Patterns {
    patterns: Arc<[RoomPattern]>,
    /// One of the patterns is `**`: every room is allowed without looking further.
    everything: bool,
}

impl Patterns {
    /// The set that allows nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses every pattern of `patterns`.
    ///
    /// # Errors
    /// The first invalid pattern, as [`RoomPattern::parse`] reports it.
    pub fn parse<I>(patterns: I) -> Result<Self, PatternError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        patterns
            .into_iter()
            .map(|pattern| RoomPattern::parse(pattern.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self::from)
    }

    /// Whether any pattern matches `room`. Allocation-free.
    pub fn allows(&self, room: &str) -> bool {
        self.everything || self.patterns.iter().any(|pattern| pattern.matches(room))
    }

    /// Whether the set holds no pattern (and so allows nothing).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// How many patterns the set holds.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// The patterns, in the order they were given.
    pub fn iter(&self) -> std::slice::Iter<'_, RoomPattern> {
        self.patterns.iter()
    }
}

impl From<Vec<RoomPattern>> for Patterns {
    fn from(patterns: Vec<RoomPattern>) -> Self {
        let everything = patterns.iter().any(RoomPattern::matches_everything);
        Self {
            patterns: patterns.into(),
            everything,
        }
    }
}

impl FromIterator<RoomPattern> for Patterns {
    fn from_iter<I: IntoIterator<Item = RoomPattern>>(patterns: I) -> Self {
        Self::from(patterns.into_iter().collect::<Vec<_>>())
    }
}

impl<'a> IntoIterator for &'a Patterns {
    type Item = &'a RoomPattern;
    type IntoIter = std::slice::Iter<'a, RoomPattern>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.patterns.iter().map(RoomPattern::as_str))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> RoomPattern {
        RoomPattern::parse(text).unwrap()
    }

    /// The examples of docs/protocol.md "Room patterns", verbatim.
    #[test]
    fn protocol_examples_match_as_documented() {
        let chat = pattern("chat:*");
        assert!(chat.matches("chat:lobby"));
        assert!(!chat.matches("chat"));
        assert!(!chat.matches("chat:a:b"));

        let inbox = pattern("user:alice:**");
        assert!(inbox.matches("user:alice:inbox"));
        assert!(inbox.matches("user:alice:a:b"));
        assert!(!inbox.matches("user:alice"));

        let all = pattern("**");
        for room in ["a", "chat", "chat:lobby", "user:alice:a:b", "x@y=z+/_-"] {
            assert!(all.matches(room), "{room}");
        }
    }

    /// A pattern without wildcards matches only the identical room.
    #[test]
    fn literal_pattern_matches_only_itself() {
        let lobby = pattern("chat:lobby");
        assert!(lobby.matches("chat:lobby"));
        assert!(!lobby.matches("chat:lobby2"));
        assert!(!lobby.matches("chat:lob"));
        assert!(!lobby.matches("chat"));
        assert!(!lobby.matches("chat:lobby:x"));
        assert!(!lobby.matches("Chat:lobby"), "matching is case-sensitive");
        assert!(pattern("news").matches("news"));
        assert!(!pattern("news").matches("news:x"));
    }

    /// `*` stands for one whole segment anywhere in the pattern, never zero or two.
    #[test]
    fn single_star_matches_exactly_one_segment() {
        let middle = pattern("game:*:state");
        assert!(middle.matches("game:42:state"));
        assert!(!middle.matches("game:state"));
        assert!(!middle.matches("game:1:2:state"));
        assert!(!middle.matches("game:42:stats"));

        let first = pattern("*:lobby");
        assert!(first.matches("chat:lobby"));
        assert!(!first.matches("lobby"));

        let lone = pattern("*");
        assert!(lone.matches("lobby"));
        assert!(!lone.matches("chat:lobby"));

        let two = pattern("*:*");
        assert!(two.matches("a:b"));
        assert!(!two.matches("a"));
        assert!(!two.matches("a:b:c"));
    }

    /// A final `**` needs at least one more segment and takes any number of them.
    #[test]
    fn double_star_matches_one_or_more_segments() {
        let rest = pattern("chat:**");
        assert!(rest.matches("chat:a"));
        assert!(rest.matches("chat:a:b:c:d"));
        assert!(!rest.matches("chat"));
        assert!(!rest.matches("chatroom:a"));

        let mixed = pattern("org:*:team:**");
        assert!(mixed.matches("org:acme:team:red"));
        assert!(mixed.matches("org:acme:team:red:ops"));
        assert!(!mixed.matches("org:acme:team"));
        assert!(!mixed.matches("org:team:red"));
    }

    /// Wildcards never match the empty segments of an (invalid) room name.
    #[test]
    fn wildcards_do_not_match_empty_segments() {
        assert!(!pattern("chat:*").matches("chat:"));
        assert!(!pattern("*").matches(""));
        assert!(!pattern("chat:**").matches("chat:"));
        assert!(!pattern("chat:**").matches("chat:a::b"));
        assert!(!pattern("**").matches(""));
        assert!(!pattern("**").matches("a::b"));
    }

    /// Every malformed pattern is refused with a reason.
    #[test]
    fn invalid_patterns_are_refused() {
        let cases = [
            ("", "empty pattern"),
            ("chat:", "empty segment"),
            (":x", "empty segment"),
            ("a::b", "empty segment"),
            (":", "empty segment"),
            ("**:x", "`**` must be the last segment"),
            ("a:**:b", "`**` must be the last segment"),
            ("a*", "`*` must be a whole segment"),
            ("chat:lob*", "`*` must be a whole segment"),
            ("***", "`*` must be a whole segment"),
            ("*a:b", "`*` must be a whole segment"),
            ("chat.lobby", "character outside the room alphabet"),
            ("chat lobby", "character outside the room alphabet"),
            ("chat:>", "character outside the room alphabet"),
            ("caf\u{e9}", "character outside the room alphabet"),
            ("a\nb", "character outside the room alphabet"),
        ];
        for (text, reason) in cases {
            let error = RoomPattern::parse(text).unwrap_err();
            assert_eq!(error.reason(), reason, "{text:?}");
            assert_eq!(error.pattern(), text);
        }
    }

    /// The whole room alphabet is accepted in literal segments.
    #[test]
    fn room_alphabet_is_accepted() {
        let text = "AZaz09_-@=+/:x";
        assert!(pattern(text).matches(text));
        assert_eq!(text.parse::<RoomPattern>().unwrap().as_str(), text);
        assert_eq!(pattern("chat:*").to_string(), "chat:*");
    }

    /// A set allows a room when any of its patterns does; the empty set allows nothing.
    #[test]
    fn patterns_allow_the_union() {
        let set = Patterns::parse(["chat:*", "user:alice:**"]).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.allows("chat:lobby"));
        assert!(set.allows("user:alice:inbox"));
        assert!(!set.allows("user:bob:inbox"));
        assert!(!set.allows("news"));

        let none = Patterns::none();
        assert!(none.is_empty());
        assert!(!none.allows("chat:lobby"));

        let all = Patterns::parse(["chat:x", "**"]).unwrap();
        assert!(all.allows("anything:at:all"));
    }

    /// One invalid pattern makes the whole set invalid, and the error names it.
    #[test]
    fn patterns_report_the_first_invalid_pattern() {
        let error = Patterns::parse(["chat:*", "bad*", "a::b"]).unwrap_err();
        assert_eq!(error.pattern(), "bad*");
        assert_eq!(
            error.to_string(),
            "invalid room pattern \"bad*\": `*` must be a whole segment"
        );
    }

    /// Sets compare by their patterns, and clones share storage.
    #[test]
    fn patterns_compare_by_content() {
        let a = Patterns::parse(["chat:*"]).unwrap();
        let b: Patterns = vec![pattern("chat:*")].into_iter().collect();
        assert_eq!(a, b);
        assert_ne!(a, Patterns::none());
        assert_eq!(format!("{a:?}"), "[\"chat:*\"]");
        let clone = a.clone();
        assert!(Arc::ptr_eq(&a.patterns, &clone.patterns));
    }
}
