// The browser side of test_uppy.py: stock Uppy (@uppy/core + @uppy/aws-s3) against Kiln's
// Companion-shaped routes, bundled by esbuild and run in Chromium. Exposes one function.
import Uppy from '@uppy/core'
import AwsS3 from '@uppy/aws-s3'

function hex(buffer) {
  return [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, '0')).join('')
}

window.kilnUpload = async ({ endpoint, token, project, size, chunkSize }) => {
  const bytes = new Uint8Array(size)
  for (let o = 0; o < size; o += 65536) crypto.getRandomValues(bytes.subarray(o, Math.min(size, o + 65536)))
  const digest = hex(await crypto.subtle.digest('SHA-256', bytes))
  const uppy = new Uppy({ autoProceed: false })
  const parts = []
  uppy.use(AwsS3, {
    endpoint,
    headers: { Authorization: `Bearer ${token}` },
    shouldUseMultipart: () => true,
    getChunkSize: () => chunkSize,
    retryDelays: [0, 100, 300],
  })
  uppy.on('s3-multipart:part-uploaded', (file, part) => parts.push(part.PartNumber))
  uppy.addFile({
    name: 'terrain.bin',
    type: 'application/octet-stream',
    data: new Blob([bytes]),
    meta: { project, size: String(size), sha256: digest },
  })
  const result = await uppy.upload()
  return {
    digest,
    parts: parts.sort((a, b) => a - b),
    successful: result.successful.map((f) => ({ name: f.name, body: f.response?.body ?? null })),
    failed: result.failed.map((f) => String(f.error)),
  }
}
