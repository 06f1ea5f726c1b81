// Debian's Chromium (/usr/bin/chromium, or $CHROMIUM), headless, launched the same way by every browser test:
// no sandbox (root in CI), no GPU, and nothing that reaches the network on its own.
import { chromium } from "playwright-core";

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync"],
  });
}
