// Bundles page.mjs and opens it in Debian's Chromium (playwright-core) on the editor's own
// origin (KILN_PAGE_ORIGIN, a page Playwright serves), so that Uppy's calls to the API and
// its part PUTs to the object store are both cross-origin and go through their CORS (with
// preflights). Drops the first attempt of some part uploads to make Uppy retry, and prints
// what kilnUpload() returned as one JSON line.
// Env: KILN_API (http://host:port), KILN_PAGE_ORIGIN, KILN_TOKEN, KILN_PROJECT, KILN_SIZE,
//      KILN_CHUNK, KILN_DROP_PARTS (comma-separated part numbers whose first PUT is aborted).
const path = require('node:path')
const esbuild = require('esbuild')
const { launch } = require('../chromium.cjs')

async function main() {
  const built = await esbuild.build({
    entryPoints: [path.join(__dirname, 'page.mjs')],
    bundle: true,
    write: false,
    format: 'iife',
    platform: 'browser',
    nodePaths: (process.env.NODE_PATH || '').split(':').filter(Boolean),
    logLevel: 'error',
  })
  const script = built.outputFiles[0].text
  const api = process.env.KILN_API
  // Playwright serves the page (it never came from an address), so Chromium's Local Network
  // Access would treat the API and the store on 127.0.0.1 as a local network to ask the user
  // about (turned off by launch()); in a deployment the page and the API share an address space.
  const browser = await launch()
  try {
    const page = await browser.newPage()
    page.on('console', (m) => process.stderr.write(`[browser] ${m.text()}\n`))
    const page_url = `${process.env.KILN_PAGE_ORIGIN}/upload`
    await page.route(page_url, (route) =>
      route.fulfill({ contentType: 'text/html', body: `<!doctype html><script>${script}</script>` }),
    )
    const drop = new Set((process.env.KILN_DROP_PARTS || '').split(',').filter(Boolean))
    const dropped = []
    await page.route(/partNumber=\d+/, (route) => {
      const n = new URL(route.request().url()).searchParams.get('partNumber')
      if (route.request().method() === 'PUT' && drop.has(n)) {
        drop.delete(n)
        dropped.push(Number(n))
        return route.abort('connectionreset')
      }
      return route.continue()
    })
    await page.goto(page_url)
    const result = await page.evaluate((args) => window.kilnUpload(args), {
      endpoint: api,
      token: process.env.KILN_TOKEN,
      project: process.env.KILN_PROJECT,
      size: Number(process.env.KILN_SIZE),
      chunkSize: Number(process.env.KILN_CHUNK),
    })
    result.dropped = dropped.sort((a, b) => a - b)
    process.stdout.write(JSON.stringify(result) + '\n')
  } finally {
    await browser.close()
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
