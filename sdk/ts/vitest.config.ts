import { configDefaults, defineConfig } from 'vitest/config'

// The integration tests (test/integration) need a running Kiln (KILN_API): without one they
// are not collected, so `vitest run` is the unit tier.
export default defineConfig({
  test: {
    globalSetup: ['./test/generate.ts'],
    testTimeout: 60_000,
    exclude: [...configDefaults.exclude, ...(process.env.KILN_API ? [] : ['test/integration/**'])],
  },
})
