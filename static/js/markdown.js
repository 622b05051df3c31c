// Answers are untrusted Markdown: rendered with marked, sanitised with DOMPurify, code highlighted by
// highlight.js (all vendored in static/vendor, see static/README.md). What an answer may not do:
//  - run script: raw HTML in the Markdown is shown as text, and DOMPurify removes script, event handlers and
//    javascript: links from whatever remains;
//  - fetch anything: an image whose source is not an inline data: image is dropped (its alt text is kept),
//    inside DOMPurify's inert document, so no request is ever made for it;
//  - style or clobber the page: no style element or attribute, no id or name, and no class except a code
//    block's language-*; the pane itself contains its layout (static/css/arena.css).
import { Marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.js";
import hljs from "../vendor/highlight/core.min.js";
import bash from "../vendor/highlight/languages/bash.min.js";
import c from "../vendor/highlight/languages/c.min.js";
import cpp from "../vendor/highlight/languages/cpp.min.js";
import css from "../vendor/highlight/languages/css.min.js";
import go from "../vendor/highlight/languages/go.min.js";
import java from "../vendor/highlight/languages/java.min.js";
import javascript from "../vendor/highlight/languages/javascript.min.js";
import json from "../vendor/highlight/languages/json.min.js";
import markdown from "../vendor/highlight/languages/markdown.min.js";
import python from "../vendor/highlight/languages/python.min.js";
import rust from "../vendor/highlight/languages/rust.min.js";
import sql from "../vendor/highlight/languages/sql.min.js";
import typescript from "../vendor/highlight/languages/typescript.min.js";
import xml from "../vendor/highlight/languages/xml.min.js";
import yaml from "../vendor/highlight/languages/yaml.min.js";

const LANGUAGES = { bash, c, cpp, css, go, java, javascript, json, markdown, python, rust, sql, typescript, xml, yaml };
for (const [name, grammar] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, grammar);
hljs.configure({ ignoreUnescapedHTML: true });

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (ch) => ESCAPES[ch]);
}

const marked = new Marked({ gfm: true, breaks: false, async: false });
// Raw HTML written by a model is shown as the text it is, never interpreted.
marked.use({ renderer: { html: (token) => escapeHtml(token.text) } });

const ALLOWED_TAGS = ["a", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
  "i", "img", "li", "ol", "p", "pre", "s", "span", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead",
  "tr", "ul"];
const ALLOWED_ATTR = ["href", "title", "alt", "src", "class", "start", "align", "colspan", "rowspan"];
const DATA_IMAGE = /^data:image\/(png|gif|jpe?g|webp);base64,[a-z0-9+/=\s]+$/i;

const purifier = DOMPurify(window);
purifier.addHook("afterSanitizeAttributes", (node) => {
  const tag = node.nodeName;
  if (node.hasAttribute("class") && !(tag === "CODE" && /^language-[\w+#.-]{1,40}$/.test(node.getAttribute("class")))) {
    node.removeAttribute("class");
  }
  if (tag === "IMG" && !DATA_IMAGE.test(node.getAttribute("src") || "")) {
    node.removeAttribute("src");  // replaced by its alt text below, after sanitising
  }
  if (tag === "A" && node.hasAttribute("href")) {
    node.setAttribute("rel", "noopener noreferrer nofollow ugc");
    node.setAttribute("target", "_blank");
  }
});
const PURIFY = { ALLOWED_TAGS, ALLOWED_ATTR, ADD_ATTR: ["target", "rel"], ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false, RETURN_DOM_FRAGMENT: true };

/** A sanitised DocumentFragment for an answer's Markdown text (complete or still streaming). */
export function renderMarkdown(text, { highlight = false } = {}) {
  const html = marked.parse(text);
  const fragment = purifier.sanitize(html, PURIFY);
  for (const image of fragment.querySelectorAll("img:not([src])")) {
    const alt = image.getAttribute("alt");
    const note = document.createElement("span");
    note.className = "blocked-image";
    note.textContent = alt ? `[image not shown: ${alt}]` : "[image not shown]";
    image.replaceWith(note);
  }
  if (highlight) {
    for (const block of fragment.querySelectorAll("pre code")) {
      const language = (block.className.match(/language-([\w+#.-]+)/) || [])[1];
      if (language && !hljs.getLanguage(language)) continue;  // unknown: left plain, not guessed
      hljs.highlightElement(block);
    }
  }
  if (!fragment.textContent.trim() && text.trim() && !fragment.querySelector("img, hr")) {
    const raw = document.createElement("pre");  // e.g. an answer that is only "#": show what it is
    raw.textContent = text;
    fragment.replaceChildren(raw);
  }
  return fragment;
}
