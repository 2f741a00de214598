// Debian's Chromium through playwright-core, as the browser tests launch it (headless, no
// sandbox as root, WebGL on SwiftShader, and no Local Network Access prompt: the pages
// Playwright serves call Kiln on 127.0.0.1).
const { chromium } = require('playwright-core')

exports.launch = () =>
  chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--use-gl=angle', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--disable-features=LocalNetworkAccessChecks'],
  })
