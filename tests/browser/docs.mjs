// The API docs (/docs: Swagger UI) in headless Chromium with every request to another host refused, as on a
// hospital network without the internet: they must render from the service alone.
//   node docs.mjs <service-url>
// Prints one JSON object with what it found; the pytest side asserts on it.
import { launchChromium } from "./chromium.mjs";

const [serviceUrl] = process.argv.slice(2);
const own = new URL(serviceUrl).host;
const browser = await launchChromium();
const out = { elsewhere: [] };
try {
  const page = await browser.newPage();
  await page.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.host === own || url.protocol === "data:") return route.continue();
    out.elsewhere.push(url.host + url.pathname);
    return route.abort();
  });
  await page.goto(`${serviceUrl}/docs`);
  await page.locator(".opblock").first().waitFor({ timeout: 30000 });
  out.swaggerOperations = await page.locator(".opblock").count();
  out.swaggerTitle = (await page.locator(".info .title").first().textContent()).trim();
  out.redocStatus = (await page.goto(`${serviceUrl}/redoc`)).status();  // not served (see api/app.py)
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
