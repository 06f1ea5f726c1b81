// Follows a checklist link from a real hook response in headless Chromium (Debian's /usr/bin/chromium),
// checks what a coordinator sees, tries the keyboard, and keeps screenshots as test artifacts.
//   node checklist.mjs <service-url> <hook-request.json> <artifact-dir> [expired-checklist-url]
// Prints one JSON object with what it found; the pytest side asserts on it.
import { readFileSync, mkdirSync } from "node:fs";
import { launchChromium } from "./chromium.mjs";

const [serviceUrl, requestPath, artifacts, expiredUrl] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });

const hook = await fetch(`${serviceUrl}/cds-services/trial-matcher`, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: readFileSync(requestPath, "utf8"),
});
const { cards } = await hook.json();
const card = cards[0]; // the pytest side checks the page against the service's report of this card's trial
const link = card.links.find((l) => /checklist/i.test(l.label));

const browser = await launchChromium();
const out = { hookStatus: hook.status, cards: cards.length, link: link.url, trialId: card.extension["org.trialmatcher"].trialId };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const resp = await page.goto(link.url);
  out.status = resp.status();
  out.cacheControl = resp.headers()["cache-control"];
  out.h1 = (await page.locator("h1").textContent()).trim();
  out.statusHeading = (await page.locator("#status-h").textContent()).replace(/\s+/g, " ").trim();
  out.rows = await page.locator("table.criteria tbody tr").count();
  out.outcomes = await page.locator("table.criteria .badge").allTextContents();
  out.missingItems = await page.locator("#missing-h + ul li").count();
  out.registryLink = await page.locator("a[href^='https://clinicaltrials.gov/study/']").first().getAttribute("href");
  out.evidenceText = await page.locator("ul.evidence").first().textContent();
  await page.keyboard.press("Tab");
  out.firstTabTarget = await page.evaluate(() => document.activeElement?.textContent?.trim());
  await page.screenshot({ path: `${artifacts}/checklist-desktop.png`, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  out.mobileOverflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  await page.screenshot({ path: `${artifacts}/checklist-phone.png`, fullPage: false });
  await page.emulateMedia({ media: "print" });
  out.printHidesHeader = await page.locator("header.site").isHidden();
  await page.pdf?.({ path: `${artifacts}/checklist-print.pdf` }).catch(() => {});

  const forged = await page.goto(link.url.replace(/[^/]+$/, "A".repeat(43)));
  out.forgedStatus = forged.status();
  out.forgedText = (await page.locator("h1").textContent()).trim();
  await page.setViewportSize({ width: 1280, height: 600 });
  await page.emulateMedia({ media: "screen" });
  await page.screenshot({ path: `${artifacts}/checklist-forged.png` });
  if (expiredUrl) {
    const expired = await page.goto(expiredUrl);
    out.expiredStatus = expired.status();
    out.expiredText = (await page.locator("h1").textContent()).trim();
    await page.screenshot({ path: `${artifacts}/checklist-expired.png` });
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
