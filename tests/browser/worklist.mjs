// The coordinator's worklist in headless Chromium (Debian's /usr/bin/chromium): signs in with the admin
// token through the page's form, reads the three lists, follows a patient's link to the stored checklist,
// and keeps screenshots.
//   node worklist.mjs <service-url> <admin-token> <artifact-dir>
// Prints one JSON object with what it found; the pytest side asserts on it.
import { mkdirSync } from "node:fs";
import { launchChromium } from "./chromium.mjs";

const [serviceUrl, token, artifacts] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const browser = await launchChromium();
const out = {};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const first = await page.goto(`${serviceUrl}/worklist`);
  out.anonymousStatus = first.status();
  out.anonymousHasPatients = (await page.content()).includes("/worklist/row/");
  await page.fill("#token", "wrong-token");
  await Promise.all([page.waitForLoadState(), page.click("button[type=submit]")]);
  out.wrongTokenAlert = (await page.locator("[role=alert]").count()) > 0;
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(`${serviceUrl}/worklist`), page.click("button[type=submit]")]);
  out.h1 = (await page.locator("h1").textContent()).trim();
  out.lists = {};
  for (const name of ["newly-eligible", "bar-lifts-soon", "no-longer-eligible"]) {
    const section = page.locator(`section:has(#${name}-h)`);
    out.lists[name] = (await section.locator("tbody tr td:first-child a").allTextContents()).map((s) => s.trim());
  }
  out.cookieHttpOnly = (await page.context().cookies()).every((c) => c.httpOnly && c.sameSite === "Strict");
  await page.screenshot({ path: `${artifacts}/worklist-desktop.png`, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  out.mobileOverflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  await page.setViewportSize({ width: 1280, height: 900 });
  const link = page.locator("section:has(#newly-eligible-h) tbody tr td:first-child a").first();
  out.linkedPatient = (await link.textContent()).trim();
  await Promise.all([page.waitForURL(/\/worklist\/row\/\d+$/), link.click()]);
  out.rowH1 = (await page.locator("h1").textContent()).trim();
  out.rowPatient = (await page.locator("dl.meta div:first-child dd").textContent()).trim();
  out.rowCriteria = await page.locator("table.criteria tbody tr").count();
  out.rowOutcomes = await page.locator("table.criteria .badge").allTextContents();
  await page.screenshot({ path: `${artifacts}/worklist-row.png`, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
