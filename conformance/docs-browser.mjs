// Loads every page of the documentation site in headless Chromium and checks it as a reader's
// browser sees it. Run by conformance/docs-browser.sh, which serves the site and provides
// playwright-core (PLAYWRIGHT_DIR) and Chromium (CHROMIUM).
//
// Usage: node docs-browser.mjs BASE_URL SITE_DIR OUT_DIR
import { createRequire } from "node:module";
import { readdirSync } from "node:fs";
import { join } from "node:path";

const [base, siteDir, outDir] = process.argv.slice(2);
if (!base || !siteDir || !outDir) {
  console.error("usage: node docs-browser.mjs BASE_URL SITE_DIR OUT_DIR");
  process.exit(2);
}
const require = createRequire(join(process.env.PLAYWRIGHT_DIR ?? "", "/"));
const { chromium } = require("playwright-core");

const origin = new URL(base).origin;
const pages = readdirSync(siteDir).filter((f) => f.endsWith(".html")).sort();
let passed = 0;
let failed = 0;
const check = (name, problems) => {
  if (problems.length === 0) {
    passed++;
    console.log(`PASS ${name}`);
  } else {
    failed++;
    console.log(`FAIL ${name}`);
    for (const p of problems) console.log(`     ${p}`);
  }
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  timeout: 60_000,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });

const ids = new Map(); // page URL (no hash) -> Set of element ids
const links = []; // { from, href }
try {
  for (const file of pages) {
    const url = new URL(file, base).href;
    const page = await context.newPage();
    const problems = [];
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}: ${r.failure()?.errorText}`));
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (u.protocol !== "data:" && u.origin !== origin) problems.push(`request leaves the site: ${r.url()}`);
    });
    page.on("response", (r) => {
      if (r.status() !== 200 && r.status() !== 304) problems.push(`HTTP ${r.status()}: ${r.url()}`);
    });
    let response;
    try {
      response = await page.goto(url, { waitUntil: "load", timeout: 30_000 });
    } catch (e) {
      problems.push(`navigation: ${e.message}`);
    }
    if (response && response.status() !== 200) problems.push(`the page answered ${response.status()}`);
    if (response) {
      // The stylesheet applied (the header is coloured), the page has a title and a heading.
      const facts = await page.evaluate(() => ({
        header: getComputedStyle(document.querySelector("header.site") ?? document.body).backgroundColor,
        title: document.title,
        h1: document.querySelector("main h1")?.textContent ?? "",
        ids: [...document.querySelectorAll("[id]")].map((e) => e.id),
        links: [...document.querySelectorAll("a[href]")].map((a) => a.href),
        external: [...document.querySelectorAll("[src], link[href]")]
          .map((e) => e.getAttribute("src") ?? e.getAttribute("href"))
          .filter((v) => /^(https?:)?\/\//.test(v)),
        scripts: document.querySelectorAll("script").length,
      }));
      if (["rgba(0, 0, 0, 0)", "transparent", ""].includes(facts.header)) problems.push("style.css not applied");
      if (!facts.title || !facts.h1) problems.push("no title or no h1");
      if (facts.external.length) problems.push(`external resources: ${facts.external.join(", ")}`);
      if (facts.scripts) problems.push(`${facts.scripts} script elements (the site needs none)`);
      const seen = new Set();
      for (const id of facts.ids) {
        if (seen.has(id)) problems.push(`duplicate id ${id}`);
        seen.add(id);
      }
      ids.set(url, seen);
      for (const href of facts.links) links.push({ from: file, href });
      if (file === "reference.html") {
        await page.screenshot({ path: join(outDir, "reference.png") });
        const table = page.locator("#KlioBackup");
        await table.screenshot({ path: join(outDir, "reference-kliobackup.png") });
        console.log(`     screenshots: ${join(outDir, "reference.png")}, ${join(outDir, "reference-kliobackup.png")}`);
      }
    }
    check(`${file} loads without errors`, problems);
    await page.close();
  }

  // Every link: the target answers 200 (fetched once), and its #anchor exists.
  const status = new Map();
  const problems = [];
  for (const { from, href } of links) {
    const u = new URL(href);
    if (u.origin !== origin) {
      problems.push(`${from}: link leaves the site: ${href}`);
      continue;
    }
    const target = u.origin + u.pathname;
    if (!status.has(target)) {
      const r = await context.request.get(target, { maxRedirects: 0 });
      status.set(target, r.status());
    }
    if (status.get(target) !== 200) {
      problems.push(`${from}: ${href}: HTTP ${status.get(target)}`);
      continue;
    }
    const anchor = decodeURIComponent(u.hash.slice(1));
    if (anchor && !ids.get(target)?.has(anchor)) problems.push(`${from}: ${href}: no element with id "${anchor}"`);
  }
  check(`${links.length} links (${status.size} targets) resolve, anchors included`, problems);

  // Every page is reachable from the navigation of the index.
  const navigated = new Set(links.filter((l) => l.from === "index.html").map((l) => new URL(l.href).pathname));
  const orphans = pages.filter((p) => p !== "index.html" && !navigated.has(`/${p}`));
  check("every page is linked from the index", orphans.map((p) => `not linked: ${p}`));
} finally {
  await browser.close();
}

console.log(`docs-browser: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
