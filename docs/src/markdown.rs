//! Markdown (CommonMark with tables and heading attributes, by pulldown-cmark) to the parts of a
//! page: its title (the `#` heading), its lead (what comes before the first `##`) and its sections
//! (one per `##` heading, whose `{#id}` is the section's anchor).
//!
//! The site's own markup is kept by rewriting a few events, so that the stylesheet applies as it
//! is: a fenced code block is `div.code` (with `title="…"` in its info string shown as a label),
//! a block quote is a `div.note`, a table is wrapped in `div.table` (it scrolls on narrow
//! screens). Generated HTML fragments travel through the Markdown as placeholders (HTML
//! comments, which CommonMark passes through untouched) and are put back here.

use anyhow::{anyhow, bail, Result};
use pulldown_cmark::{CodeBlockKind, CowStr, Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text so that Markdown shows it literally (every ASCII punctuation character
/// backslash-escaped, as CommonMark allows).
pub fn md_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_HEADING_ATTRIBUTES
}

/// One line of Markdown from the code (a flag's help) as inline HTML, without a paragraph. Such
/// text is not written for a browser, so what looks like HTML in it (`<hostname>`) is shown as
/// text.
pub fn inline(text: &str) -> String {
    let mut html = String::new();
    let events = Parser::new_ext(text, options())
        .filter(|e| !matches!(e, Event::Start(Tag::Paragraph) | Event::End(TagEnd::Paragraph)))
        .map(|e| match e {
            Event::Html(t) | Event::InlineHtml(t) => Event::Text(t),
            e => e,
        });
    pulldown_cmark::html::push_html(&mut html, events);
    html.trim_end_matches('\n').to_string()
}

/// A code block as the site shows it; `label` names what it is (a file, a command).
pub fn code_block(code: &str, label: Option<&str>) -> String {
    let label = label.map(|l| format!("<div class=\"label\">{}</div>", esc(l))).unwrap_or_default();
    format!("<div class=\"code\">{label}<pre><code>{}</code></pre></div>\n", esc(code.trim_end_matches('\n')))
}

/// A page's section: a `##` heading and what follows it.
#[derive(Debug)]
pub struct Section {
    /// The anchor (`{#id}` on the heading).
    pub id: String,
    /// The heading as plain text (the table of contents).
    pub title: String,
    /// The heading's inline HTML.
    pub title_html: String,
    /// The section's body.
    pub html: String,
}

/// A page split into its parts.
#[derive(Debug)]
pub struct Parts {
    /// The text of the `#` heading.
    pub title: String,
    /// What comes before the first section, as HTML.
    pub lead: String,
    /// The sections in order.
    pub sections: Vec<Section>,
}

/// The `title="…"` of a fenced code block's info string.
fn code_label(info: &str) -> Option<String> {
    let start = info.find("title=\"")? + "title=\"".len();
    let end = info[start..].find('"')? + start;
    Some(info[start..end].to_string())
}

/// What the events of one part render to.
#[derive(Default)]
struct Builder<'a> {
    events: Vec<Event<'a>>,
}

impl<'a> Builder<'a> {
    fn take_html(&mut self) -> String {
        let mut html = String::new();
        pulldown_cmark::html::push_html(&mut html, std::mem::take(&mut self.events).into_iter());
        html
    }
}

/// Renders `markdown`; `fragments[n]` replaces the placeholder [`placeholder`]`(n)`, and every
/// fragment must be used exactly once (a placeholder inside a code block would show as text).
pub fn render(markdown: &str, fragments: &[String]) -> Result<Parts> {
    let mut used = vec![false; fragments.len()];
    let mut title: Option<String> = None;
    let mut lead: Option<String> = None;
    let mut sections: Vec<Section> = vec![];
    let mut current = Builder::default();
    // Inside a heading: (level, id, the heading's events).
    let mut heading: Option<(HeadingLevel, Option<String>, Vec<Event>)> = None;
    let mut code: Option<(Option<String>, String)> = None;
    let finish = |current: &mut Builder, lead: &mut Option<String>, sections: &mut Vec<Section>| {
        let html = current.take_html();
        match sections.last_mut() {
            Some(s) => s.html = html,
            None => *lead = Some(html),
        }
    };
    for event in Parser::new_ext(markdown, options()) {
        let event = match event {
            Event::Html(text) | Event::InlineHtml(text) if fragment_index(&text).is_some() => {
                let n = fragment_index(&text).unwrap_or_default();
                let fragment = fragments.get(n).ok_or_else(|| anyhow!("placeholder {n} has no fragment"))?;
                used[n] = true;
                Event::Html(CowStr::from(fragment.clone()))
            }
            e => e,
        };
        if let Some((label, text)) = &mut code {
            match event {
                Event::Text(t) => text.push_str(&t),
                Event::End(TagEnd::CodeBlock) => {
                    current.events.push(Event::Html(code_block(text, label.as_deref()).into()));
                    code = None;
                }
                other => bail!("unexpected {other:?} in a code block"),
            }
            continue;
        }
        if let Some((level, _, events)) = &mut heading {
            if matches!(event, Event::End(TagEnd::Heading(l)) if l == *level) {
                let (level, id, events) = heading.take().unwrap_or((HeadingLevel::H1, None, vec![]));
                let text = plain_text(&events);
                let mut inner = String::new();
                pulldown_cmark::html::push_html(&mut inner, events.into_iter());
                match level {
                    HeadingLevel::H1 => {
                        if title.replace(text).is_some() {
                            bail!("a page has one `#` heading");
                        }
                    }
                    HeadingLevel::H2 => {
                        finish(&mut current, &mut lead, &mut sections);
                        let id = id.ok_or_else(|| anyhow!("the section heading {text:?} has no {{#id}}"))?;
                        sections.push(Section { id, title: text, title_html: inner, html: String::new() });
                    }
                    _ => {
                        let tag = format!("h{}", level as usize);
                        let id = id.map(|id| format!(" id=\"{}\"", esc(&id))).unwrap_or_default();
                        current.events.push(Event::Html(format!("<{tag}{id}>{inner}</{tag}>\n").into()));
                    }
                }
            } else {
                events.push(event);
            }
            continue;
        }
        match event {
            Event::Start(Tag::Heading { level, id, .. }) => {
                heading = Some((level, id.map(|i| i.to_string()), vec![]));
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                let label = match kind {
                    CodeBlockKind::Fenced(info) => code_label(&info),
                    CodeBlockKind::Indented => None,
                };
                code = Some((label, String::new()));
            }
            Event::Start(Tag::BlockQuote(_)) => current.events.push(Event::Html("<div class=\"note\">".into())),
            Event::End(TagEnd::BlockQuote(_)) => current.events.push(Event::Html("</div>\n".into())),
            Event::Start(Tag::Table(a)) => {
                current.events.push(Event::Html("<div class=\"table\">".into()));
                current.events.push(Event::Start(Tag::Table(a)));
            }
            Event::End(TagEnd::Table) => {
                current.events.push(Event::End(TagEnd::Table));
                current.events.push(Event::Html("</div>\n".into()));
            }
            e => current.events.push(e),
        }
    }
    finish(&mut current, &mut lead, &mut sections);
    if let Some(n) = used.iter().position(|u| !u) {
        bail!("fragment {n} is not where Markdown passes HTML through (in a code block?): {}", fragments[n]);
    }
    let title = title.ok_or_else(|| anyhow!("the page has no `#` heading"))?;
    Ok(Parts { title, lead: lead.unwrap_or_default(), sections })
}

/// What stands for fragment `n` in the Markdown.
pub fn placeholder(n: usize) -> String {
    format!("<!--klio-docs fragment {n}-->")
}

fn fragment_index(text: &str) -> Option<usize> {
    text.trim().strip_prefix("<!--klio-docs fragment ")?.strip_suffix("-->")?.parse().ok()
}

fn plain_text(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Text(t) | Event::Code(t) => Some(t.as_ref()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_splits_into_title_lead_and_sections() {
        let fragments = vec!["<div class=\"x\">generated</div>".to_string()];
        let md = format!(
            "# The title\n\nLead with `code` and [a link](a.html#b).\n\n> A note.\n\n## First `one` {{#first}}\n\n{}\n\n```yaml title=\"f.yaml\"\na: <b>\n```\n\n| A | B |\n|---|---|\n| 1 | 2 |\n\n### Sub {{#sub}}\n\n## Second {{#second}}\n\n- item\n",
            placeholder(0)
        );
        let parts = render(&md, &fragments).unwrap();
        assert_eq!(parts.title, "The title");
        assert_eq!(
            parts.lead,
            "<p>Lead with <code>code</code> and <a href=\"a.html#b\">a link</a>.</p>\n<div class=\"note\">\n<p>A note.</p>\n</div>\n"
        );
        assert_eq!(parts.sections.len(), 2);
        let first = &parts.sections[0];
        assert_eq!((first.id.as_str(), first.title.as_str()), ("first", "First one"));
        assert_eq!(first.title_html, "First <code>one</code>");
        assert!(first.html.starts_with("<div class=\"x\">generated</div>"), "{}", first.html);
        assert!(first.html.contains(
            "<div class=\"code\"><div class=\"label\">f.yaml</div><pre><code>a: &lt;b&gt;</code></pre></div>"
        ));
        assert!(first.html.contains("<div class=\"table\"><table>"), "{}", first.html);
        assert!(first.html.contains("<h3 id=\"sub\">Sub</h3>"), "{}", first.html);
        assert_eq!(parts.sections[1].html, "<ul>\n<li>item</li>\n</ul>\n");
    }

    #[test]
    fn fragments_must_land_where_html_passes() {
        let fragments = vec!["<p>x</p>".to_string()];
        let md = format!("# T\n\n```\n{}\n```\n", placeholder(0));
        assert!(render(&md, &fragments).is_err());
        assert!(render("# T\n\n## No id\n", &[]).is_err());
    }

    #[test]
    fn escaping() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(
            inline("use `a<b>` and **not** <this>"),
            "use <code>a&lt;b&gt;</code> and <strong>not</strong> &lt;this&gt;"
        );
        assert_eq!(inline(&md_escape("a_b *c* <d> {e}")), "a_b *c* &lt;d&gt; {e}");
    }
}
