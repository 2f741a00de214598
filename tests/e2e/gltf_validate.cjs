// Khronos' glTF-Validator (npm gltf-validator) on GLB files: one JSON line per file with its
// error and warning counts and the first error messages.
//   node gltf_validate.cjs FILE...
const fs = require('fs');
const validator = require('gltf-validator');

(async () => {
  for (const file of process.argv.slice(2)) {
    const report = await validator.validateBytes(new Uint8Array(fs.readFileSync(file)), {
      maxIssues: 50,
      externalResourceFunction: () => Promise.reject(new Error('no external resources')),
    });
    const errors = report.issues.messages.filter((m) => m.severity === 0);
    console.log(JSON.stringify({
      file,
      errors: report.issues.numErrors,
      warnings: report.issues.numWarnings,
      messages: errors.slice(0, 5).map((m) => `${m.code} ${m.pointer || ''}: ${m.message}`),
    }));
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
