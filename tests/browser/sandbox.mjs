// Opens tests/browser/sandbox.html (served from its own loopback origin) in Debian's Chromium: discovery,
// prefetch from the FHIR server and the hook all cross origins. Follows the first card's checklist link,
// keeps screenshots, and prints one JSON object for the pytest side.
//   node sandbox.mjs <page-url> <artifact-dir>
import { mkdirSync } from "node:fs";
import { launchChromium } from "./chromium.mjs";

const [pageUrl, artifacts] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const browser = await launchChromium();
let out = {};
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 1000 } });
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  await page.goto(pageUrl);
  await page.waitForSelector("body[data-done='1']", { timeout: 60000 });
  out = await page.evaluate(() => window.__result);
  out.consoleErrors = [...consoleErrors]; // the EHR page's own; the checklist page is tested elsewhere
  await page.screenshot({ path: `${artifacts}/sandbox-cards.png`, fullPage: true });
  const link = page.locator(".card a", { hasText: "checklist" }).first();
  if (await link.count()) {
    await link.click();
    await page.waitForSelector("table.criteria");
    out.checklistRows = await page.locator("table.criteria tbody tr").count();
    out.checklistH1 = (await page.locator("h1").textContent()).trim();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
