// The embedded object store driven by an independent client: the AWS SDK for JavaScript v3
// (@aws-sdk/client-s3, @aws-sdk/s3-request-presigner), with its default settings but
// path-style addressing. Run by test_objects.py against a real `kiln objects`.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const {
  S3Client, PutObjectCommand, GetObjectCommand, HeadObjectCommand, DeleteObjectCommand,
  ListObjectsV2Command, CopyObjectCommand, CreateMultipartUploadCommand, UploadPartCommand,
  ListPartsCommand, CompleteMultipartUploadCommand, AbortMultipartUploadCommand,
  ListMultipartUploadsCommand, PutObjectTaggingCommand, GetObjectTaggingCommand,
  DeleteObjectTaggingCommand, PutObjectAclCommand, PutBucketVersioningCommand,
  PutBucketPolicyCommand, PutBucketEncryptionCommand, GetBucketVersioningCommand,
  ListObjectsCommand, DeleteObjectsCommand, CreateBucketCommand, DeleteBucketCommand,
  HeadBucketCommand, ListBucketsCommand, PutBucketCorsCommand, GetBucketCorsCommand, DeleteBucketCorsCommand, ListObjectVersionsCommand, GetBucketLocationCommand, UploadPartCopyCommand,
} = require('@aws-sdk/client-s3');
const { getSignedUrl } = require('@aws-sdk/s3-request-presigner');
const { SignatureV4 } = require('@smithy/signature-v4');  // the SDK's own signer


const endpoint = process.env.KILN_S3_ENDPOINT;
const credentials = { accessKeyId: process.env.KILN_S3_KEY, secretAccessKey: process.env.KILN_S3_SECRET };
const Bucket = 'kiln';
const s3 = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials });
const md5 = (b) => crypto.createHash('md5').update(b).digest('hex');
// For presigned PUTs: without it the SDK hoists the checksum of an empty body into the URL
// (x-amz-checksum-crc32=AAAAAA==), which the store checks, as S3 does (AWS's advice for
// presigning: WHEN_REQUIRED).
const presigner = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials,
  requestChecksumCalculation: 'WHEN_REQUIRED' });

// SHA-256 for the signer, from node's crypto.
class Sha256 {
  constructor(secret) { this.h = secret ? crypto.createHmac('sha256', secret) : crypto.createHash('sha256'); }
  update(d) { this.h.update(d); }
  async digest() { return new Uint8Array(this.h.digest()); }
}
const signer = new SignatureV4({ credentials, region: 'us-east-1', service: 's3', sha256: Sha256,
  uriEscapePath: false });  // S3 signs the path as sent (paths given here are encoded)

// A request exactly as given (method, path, query, headers, body), signed with SigV4 and
// its payload hash: for inputs a well-behaved SDK would not send.
async function signedFetch(method, path, { query = {}, headers = {}, body = '' } = {}) {
  const url = new URL(endpoint);
  const payload = Buffer.from(body);
  const req = await signer.sign({
    method, protocol: url.protocol, hostname: url.hostname, port: Number(url.port), path, query,
    headers: { host: url.host, 'x-amz-content-sha256': crypto.createHash('sha256').update(payload).digest('hex'), ...headers },
    body: payload,
  });
  const qs = Object.entries(query).map(([k, v]) => (v === '' ? encodeURIComponent(k)
    : `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)).join('&');
  const res = await fetch(`${endpoint}${path}${qs ? `?${qs}` : ''}`, {
    method, headers: req.headers, body: method === 'GET' || method === 'HEAD' ? undefined : payload });
  return { status: res.status, text: await res.text(), headers: res.headers };
}
const md5b64 = (b) => crypto.createHash('md5').update(b).digest('base64');

test('put, head, get, delete', async () => {
  const body = Buffer.from('hello from the sdk');
  const put = await s3.send(new PutObjectCommand({
    Bucket, Key: 'dir/hello.txt', Body: body, ContentType: 'text/plain', Metadata: { origin: 'sdk' },
  }));
  assert.strictEqual(put.ETag, `"${md5(body)}"`);
  const head = await s3.send(new HeadObjectCommand({ Bucket, Key: 'dir/hello.txt' }));
  assert.strictEqual(head.ContentLength, body.length);
  assert.strictEqual(head.ContentType, 'text/plain');
  assert.strictEqual(head.Metadata.origin, 'sdk');
  const got = await s3.send(new GetObjectCommand({ Bucket, Key: 'dir/hello.txt' }));
  assert.strictEqual(await got.Body.transformToString(), body.toString());
  await s3.send(new DeleteObjectCommand({ Bucket, Key: 'dir/hello.txt' }));
  await assert.rejects(s3.send(new GetObjectCommand({ Bucket, Key: 'dir/hello.txt' })), { name: 'NoSuchKey' });
});

test('range GET', async () => {
  const body = Buffer.from('0123456789abcdef');
  await s3.send(new PutObjectCommand({ Bucket, Key: 'range.bin', Body: body }));
  const part = await s3.send(new GetObjectCommand({ Bucket, Key: 'range.bin', Range: 'bytes=4-9' }));
  assert.strictEqual(await part.Body.transformToString(), '456789');
  assert.strictEqual(part.ContentRange, 'bytes 4-9/16');
  const tail = await s3.send(new GetObjectCommand({ Bucket, Key: 'range.bin', Range: 'bytes=-3' }));
  assert.strictEqual(await tail.Body.transformToString(), 'def');
  await assert.rejects(s3.send(new GetObjectCommand({ Bucket, Key: 'range.bin', Range: 'bytes=99-' })),
    (e) => e.$metadata.httpStatusCode === 416);
  await assert.rejects(s3.send(new GetObjectCommand({ Bucket, Key: 'range.bin', Range: 'bytes=-0' })),
    (e) => e.$metadata.httpStatusCode === 416, 'a zero suffix is unsatisfiable');
  // RFC 9110 section 14.2 (and S3): a Range that is not one valid byte range is ignored and
  // the whole object is served; an end past 2^64-1 is clamped.
  for (const Range of ['bytes=3-2', 'bytes=0-0,5-6', 'items=0-1', 'bytes=x-1', 'bytes 0-1']) {
    const whole = await s3.send(new GetObjectCommand({ Bucket, Key: 'range.bin', Range }));
    assert.strictEqual(whole.$metadata.httpStatusCode, 200, Range);
    assert.strictEqual(await whole.Body.transformToString(), body.toString(), Range);
  }
  const big = await s3.send(new GetObjectCommand({ Bucket, Key: 'range.bin', Range: 'bytes=10-99999999999999999999999' }));
  assert.strictEqual(big.$metadata.httpStatusCode, 206);
  assert.strictEqual(await big.Body.transformToString(), 'abcdef');
});

test('list with prefix, delimiter and pages', async () => {
  for (const k of ['l/a', 'l/b', 'l/c/1', 'l/c/2', 'l/d']) {
    await s3.send(new PutObjectCommand({ Bucket, Key: k, Body: k }));
  }
  const top = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: 'l/', Delimiter: '/' }));
  assert.deepStrictEqual(top.Contents.map((c) => c.Key), ['l/a', 'l/b', 'l/d']);
  assert.deepStrictEqual(top.CommonPrefixes.map((p) => p.Prefix), ['l/c/']);
  const seen = [];
  let token;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: 'l/', MaxKeys: 2, ContinuationToken: token }));
    seen.push(...(page.Contents || []).map((c) => c.Key));
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  assert.deepStrictEqual(seen, ['l/a', 'l/b', 'l/c/1', 'l/c/2', 'l/d']);
});

test('copy: metadata directive, preconditions on the source, never onto itself unchanged', async () => {
  await s3.send(new PutObjectCommand({ Bucket, Key: 'copy/src', Body: 'original', ContentType: 'text/plain',
    Metadata: { a: '1' } }));
  const r = await s3.send(new CopyObjectCommand({ Bucket, Key: 'copy/dst', CopySource: `${Bucket}/copy/src` }));
  assert.strictEqual(r.CopyObjectResult.ETag, `"${md5('original')}"`);
  const got = await s3.send(new GetObjectCommand({ Bucket, Key: 'copy/dst' }));
  assert.strictEqual(await got.Body.transformToString(), 'original');
  assert.strictEqual(got.ContentType, 'text/plain', 'COPY keeps the type');
  assert.deepStrictEqual(got.Metadata, { a: '1' }, 'COPY keeps the metadata');
  await s3.send(new CopyObjectCommand({ Bucket, Key: 'copy/dst', CopySource: `${Bucket}/copy/src`,
    MetadataDirective: 'REPLACE', ContentType: 'application/json', Metadata: { b: '2' } }));
  const replaced = await s3.send(new HeadObjectCommand({ Bucket, Key: 'copy/dst' }));
  assert.strictEqual(replaced.ContentType, 'application/json');
  assert.deepStrictEqual(replaced.Metadata, { b: '2' });
  // Onto itself: only with REPLACE (S3's InvalidRequest otherwise).
  await assert.rejects(s3.send(new CopyObjectCommand({ Bucket, Key: 'copy/src', CopySource: `${Bucket}/copy/src` })),
    (e) => e.name === 'InvalidRequest' && e.$metadata.httpStatusCode === 400);
  await s3.send(new CopyObjectCommand({ Bucket, Key: 'copy/src', CopySource: `${Bucket}/copy/src`,
    MetadataDirective: 'REPLACE', Metadata: { c: '3' } }));
  assert.deepStrictEqual((await s3.send(new HeadObjectCommand({ Bucket, Key: 'copy/src' }))).Metadata, { c: '3' });
  await assert.rejects(s3.send(new CopyObjectCommand({ Bucket, Key: 'copy/x', CopySource: `${Bucket}/copy/src`,
    MetadataDirective: 'MOVE' })), { name: 'InvalidArgument' });
  // Preconditions on the source: 412 and nothing written.
  const etag = `"${md5('original')}"`;
  for (const cond of [{ CopySourceIfMatch: '"0000"' }, { CopySourceIfNoneMatch: etag },
    { CopySourceIfUnmodifiedSince: new Date(Date.now() - 86400e3) },
    { CopySourceIfModifiedSince: new Date(Date.now() + 86400e3) }]) {
    await assert.rejects(s3.send(new CopyObjectCommand({ Bucket, Key: 'copy/cond', CopySource: `${Bucket}/copy/src`, ...cond })),
      (e) => e.$metadata.httpStatusCode === 412, JSON.stringify(cond));
  }
  await assert.rejects(s3.send(new HeadObjectCommand({ Bucket, Key: 'copy/cond' })), (e) => e.$metadata.httpStatusCode === 404);
  await s3.send(new CopyObjectCommand({ Bucket, Key: 'copy/cond', CopySource: `${Bucket}/copy/src`, CopySourceIfMatch: etag }));
  await assert.rejects(s3.send(new CopyObjectCommand({ Bucket, Key: 'copy/y', CopySource: `${Bucket}/copy/none` })), { name: 'NoSuchKey' });
  await assert.rejects(s3.send(new CopyObjectCommand({ Bucket, Key: 'copy/y', CopySource: `${Bucket}/copy/src?versionId=abc` })),
    (e) => e.$metadata.httpStatusCode === 400);
});

test('UploadPartCopy: parts from ranges of other objects, with the range checked', async () => {
  const big = crypto.randomBytes(6 << 20);
  await s3.send(new PutObjectCommand({ Bucket, Key: 'pc/src', Body: big }));
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key: 'pc/dst' }));
  const p1 = await s3.send(new UploadPartCopyCommand({ Bucket, Key: 'pc/dst', UploadId, PartNumber: 1,
    CopySource: `${Bucket}/pc/src`, CopySourceRange: `bytes=0-${(5 << 20) - 1}` }));
  const p2 = await s3.send(new UploadPartCopyCommand({ Bucket, Key: 'pc/dst', UploadId, PartNumber: 2,
    CopySource: `${Bucket}/pc/src`, CopySourceRange: `bytes=${5 << 20}-${big.length - 1}` }));
  assert.strictEqual(p1.CopyPartResult.ETag, `"${md5(big.subarray(0, 5 << 20))}"`);
  await assert.rejects(s3.send(new UploadPartCopyCommand({ Bucket, Key: 'pc/dst', UploadId, PartNumber: 3,
    CopySource: `${Bucket}/pc/src`, CopySourceRange: `bytes=0-${big.length}` })),
  (e) => e.name === 'InvalidRange' && e.$metadata.httpStatusCode === 416, 'past the end');
  for (const CopySourceRange of ['bytes=5-4', 'bytes=-5', 'items=0-1']) {
    await assert.rejects(s3.send(new UploadPartCopyCommand({ Bucket, Key: 'pc/dst', UploadId, PartNumber: 3,
      CopySource: `${Bucket}/pc/src`, CopySourceRange })), (e) => e.$metadata.httpStatusCode === 400, CopySourceRange);
  }
  const parts = await s3.send(new ListPartsCommand({ Bucket, Key: 'pc/dst', UploadId }));
  assert.deepStrictEqual(parts.Parts.map((p) => [p.PartNumber, p.Size]), [[1, 5 << 20], [2, big.length - (5 << 20)]]);
  await s3.send(new CompleteMultipartUploadCommand({ Bucket, Key: 'pc/dst', UploadId, MultipartUpload: {
    Parts: [{ PartNumber: 1, ETag: p1.CopyPartResult.ETag }, { PartNumber: 2, ETag: p2.CopyPartResult.ETag }] } }));
  const got = await s3.send(new GetObjectCommand({ Bucket, Key: 'pc/dst' }));
  assert.ok(Buffer.from(await got.Body.transformToByteArray()).equals(big), 'the copy is byte-exact');
});

test('multipart upload with S3 ETags, ListParts, abort', async () => {
  const parts = [crypto.randomBytes(5 << 20), crypto.randomBytes(5 << 20), crypto.randomBytes(1000)];
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key: 'mp/big.bin' }));
  const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket, Prefix: 'mp/' }));
  assert.ok(uploads.Uploads.some((u) => u.UploadId === UploadId));
  const done = [];
  for (let i = 0; i < parts.length; i++) {
    const r = await s3.send(new UploadPartCommand({ Bucket, Key: 'mp/big.bin', UploadId, PartNumber: i + 1, Body: parts[i] }));
    assert.strictEqual(r.ETag, `"${md5(parts[i])}"`);
    done.push({ PartNumber: i + 1, ETag: r.ETag });
  }
  const listed = await s3.send(new ListPartsCommand({ Bucket, Key: 'mp/big.bin', UploadId, MaxParts: 2 }));
  assert.strictEqual(listed.Parts.length, 2);
  assert.strictEqual(listed.IsTruncated, true);
  const rest = await s3.send(new ListPartsCommand({ Bucket, Key: 'mp/big.bin', UploadId, PartNumberMarker: listed.NextPartNumberMarker }));
  assert.deepStrictEqual(rest.Parts.map((p) => p.PartNumber), [3]);
  const fin = await s3.send(new CompleteMultipartUploadCommand({ Bucket, Key: 'mp/big.bin', UploadId, MultipartUpload: { Parts: done } }));
  const expected = md5(Buffer.concat(parts.map((p) => crypto.createHash('md5').update(p).digest()))) + '-3';
  assert.strictEqual(fin.ETag, `"${expected}"`);
  const got = await s3.send(new GetObjectCommand({ Bucket, Key: 'mp/big.bin' }));
  const bytes = Buffer.from(await got.Body.transformToByteArray());
  assert.ok(bytes.equals(Buffer.concat(parts)));

  const second = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key: 'mp/aborted' }));
  await s3.send(new AbortMultipartUploadCommand({ Bucket, Key: 'mp/aborted', UploadId: second.UploadId }));
  await assert.rejects(s3.send(new UploadPartCommand({ Bucket, Key: 'mp/aborted', UploadId: second.UploadId, PartNumber: 1, Body: 'x' })),
    { name: 'NoSuchUpload' });
});

test('wrong credentials and missing buckets are refused', async () => {
  const bad = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { ...credentials, secretAccessKey: 'wrong-secret-0123456789abcdef0123' } });
  await assert.rejects(bad.send(new GetObjectCommand({ Bucket, Key: 'x' })), { name: 'SignatureDoesNotMatch' });
  const unknown = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'nobody', secretAccessKey: 'x' } });
  await assert.rejects(unknown.send(new GetObjectCommand({ Bucket, Key: 'x' })), { name: 'InvalidAccessKeyId' });
  await assert.rejects(s3.send(new PutObjectCommand({ Bucket: 'no-such-bucket', Key: 'x', Body: 'x' })), { name: 'NoSuchBucket' });
});

test('presigned PUT and GET, expired and replayed URLs', async () => {
  const putUrl = await getSignedUrl(presigner, new PutObjectCommand({ Bucket, Key: 'pre/file.bin' }), { expiresIn: 300 });
  // With the SDK's default, the URL names the empty body's CRC32: other bytes are refused.
  const hoisted = await getSignedUrl(s3, new PutObjectCommand({ Bucket, Key: 'pre/hoisted.bin' }), { expiresIn: 300 });
  assert.match(hoisted, /x-amz-checksum-crc32=/);
  const refused = await fetch(hoisted, { method: 'PUT', body: 'not empty' });
  assert.strictEqual(refused.status, 400, 'a hoisted checksum is checked like the header');
  const body = crypto.randomBytes(300000);
  const put = await fetch(putUrl, { method: 'PUT', body });
  assert.strictEqual(put.status, 200, await put.text());
  assert.strictEqual(put.headers.get('etag'), `"${md5(body)}"`);
  const getUrl = await getSignedUrl(s3, new GetObjectCommand({ Bucket, Key: 'pre/file.bin' }), { expiresIn: 300 });
  const got = await fetch(getUrl);
  assert.strictEqual(got.status, 200);
  assert.ok(Buffer.from(await got.arrayBuffer()).equals(body));
  // Replayed for another key: the signature covers the path.
  const other = await fetch(getUrl.replace('pre/file.bin', 'pre/other.bin'));
  assert.strictEqual(other.status, 403);
  assert.match(await other.text(), /SignatureDoesNotMatch/);
  // Expired: signed an hour ago for 60 s.
  const old = await getSignedUrl(s3, new GetObjectCommand({ Bucket, Key: 'pre/file.bin' }),
    { expiresIn: 60, signingDate: new Date(Date.now() - 3600 * 1000) });
  const expired = await fetch(old);
  assert.strictEqual(expired.status, 403);
  assert.match(await expired.text(), /Request has expired/);
  // Tampered signature.
  const tampered = await fetch(getUrl.replace(/X-Amz-Signature=([0-9a-f])/, (m, c) => `X-Amz-Signature=${c === '0' ? '1' : '0'}`));
  assert.strictEqual(tampered.status, 403);
});

test('CORS preflight and exposed ETag for the browser', async () => {
  const pre = await fetch(`${endpoint}/${Bucket}/cors.txt`, {
    method: 'OPTIONS',
    headers: { Origin: 'http://editor.example', 'Access-Control-Request-Method': 'PUT', 'Access-Control-Request-Headers': 'content-type' },
  });
  assert.strictEqual(pre.status, 200);
  assert.strictEqual(pre.headers.get('access-control-allow-origin'), 'http://editor.example');
  assert.match(pre.headers.get('access-control-allow-methods'), /PUT/);
  const url = await getSignedUrl(presigner, new PutObjectCommand({ Bucket, Key: 'cors.txt' }), { expiresIn: 60 });
  const put = await fetch(url, { method: 'PUT', body: 'x', headers: { Origin: 'http://editor.example' } });
  assert.strictEqual(put.status, 200);
  assert.match(put.headers.get('access-control-expose-headers'), /ETag/);
  const denied = await fetch(`${endpoint}/${Bucket}/cors.txt`, {
    method: 'OPTIONS', headers: { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'PUT' },
  });
  assert.strictEqual(denied.status, 403);
});

test('flexible checksums: every algorithm, as a header and as an aws-chunked trailer; wrong ones refused', async () => {
  const { Readable } = require('node:stream');
  const body = crypto.randomBytes(300_000);
  const seen = [];
  const sdk = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials });
  // Records how each request carried its checksum (a header, or a trailer it announced).
  sdk.middlewareStack.add((next) => async (args) => {
    const h = args.request.headers;
    seen.push(h['x-amz-trailer'] ? `trailer:${h['x-amz-trailer']}`
      : Object.keys(h).find((k) => k.startsWith('x-amz-checksum-')) || 'none');
    return next(args);
  }, { step: 'finalizeRequest', name: 'recordChecksum' });
  for (const ChecksumAlgorithm of ['CRC32', 'CRC32C', 'CRC64NVME', 'SHA1', 'SHA256']) {
    const Key = `sum/${ChecksumAlgorithm}`;
    const put = await sdk.send(new PutObjectCommand({ Bucket, Key, Body: body, ChecksumAlgorithm }));
    // The store answers with the checksum it verified, as S3 does.
    assert.ok(put[`Checksum${ChecksumAlgorithm}`], `${ChecksumAlgorithm} echoed`);
    await sdk.send(new PutObjectCommand({
      Bucket, Key: `${Key}-stream`, Body: Readable.from([body]), ContentLength: body.length, ChecksumAlgorithm,
    }));
    const got = await sdk.send(new GetObjectCommand({ Bucket, Key: `${Key}-stream` }));
    assert.ok(Buffer.from(await got.Body.transformToByteArray()).equals(body));
  }
  assert.ok(seen.some((s) => s.startsWith('trailer:')), `no trailer was sent: ${seen}`);
  // A checksum that is not the body's: refused, nothing stored.
  await assert.rejects(s3.send(new PutObjectCommand({
    Bucket, Key: 'sum/wrong', Body: body, ChecksumCRC32: 'AAAAAA==',
  })), (e) => e.name === 'BadDigest' && /CRC32/.test(e.message));
  await assert.rejects(s3.send(new HeadObjectCommand({ Bucket, Key: 'sum/wrong' })), (e) => e.$metadata.httpStatusCode === 404);
});

test('what the store does not implement is refused with 501 and changes nothing', async () => {
  const body = Buffer.from('keep me');
  await s3.send(new PutObjectCommand({ Bucket, Key: 'ni/a.bin', Body: body }));
  const notImplemented = (e) => e.$metadata.httpStatusCode === 501 && e.name === 'NotImplemented';
  const refused = [
    new PutObjectTaggingCommand({ Bucket, Key: 'ni/a.bin', Tagging: { TagSet: [{ Key: 'k', Value: 'v' }] } }),
    new GetObjectTaggingCommand({ Bucket, Key: 'ni/a.bin' }),
    new DeleteObjectTaggingCommand({ Bucket, Key: 'ni/a.bin' }),
    new PutObjectAclCommand({ Bucket, Key: 'ni/a.bin', ACL: 'public-read' }),
    new PutBucketVersioningCommand({ Bucket, VersioningConfiguration: { Status: 'Enabled' } }),
    new GetBucketVersioningCommand({ Bucket }),
    new PutBucketPolicyCommand({ Bucket, Policy: '{"Version":"2012-10-17","Statement":[]}' }),
    new PutBucketEncryptionCommand({ Bucket, ServerSideEncryptionConfiguration: {
      Rules: [{ ApplyServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] } }),
    // A protection asked for in a header is refused, never ignored.
    new PutObjectCommand({ Bucket, Key: 'ni/sse.bin', Body: body, ServerSideEncryption: 'AES256' }),
    new PutObjectCommand({ Bucket, Key: 'ni/lock.bin', Body: body, ObjectLockMode: 'COMPLIANCE',
      ObjectLockRetainUntilDate: new Date(Date.now() + 86400000) }),
    new PutObjectCommand({ Bucket, Key: 'ni/acl.bin', Body: body, ACL: 'public-read' }),
    new PutObjectCommand({ Bucket, Key: 'ni/tags.bin', Body: body, Tagging: 'a=b' }),
  ];
  for (const cmd of refused) {
    await assert.rejects(s3.send(cmd), notImplemented, cmd.constructor.name);
  }
  const got = await s3.send(new GetObjectCommand({ Bucket, Key: 'ni/a.bin' }));
  assert.strictEqual(await got.Body.transformToString(), 'keep me', 'the object is untouched');
  for (const Key of ['ni/sse.bin', 'ni/lock.bin', 'ni/acl.bin', 'ni/tags.bin']) {
    await assert.rejects(s3.send(new HeadObjectCommand({ Bucket, Key })),
      (e) => e.$metadata.httpStatusCode === 404, `${Key} was not stored`);
  }
  // What it does implement still works, private ACLs included.
  await s3.send(new PutObjectCommand({ Bucket, Key: 'ni/private.bin', Body: body, ACL: 'private' }));
});

test('conditional writes and reads (S3 conditional writes; RFC 9110 section 13)', async () => {
  const Key = 'cond/a.txt';
  const first = await s3.send(new PutObjectCommand({ Bucket, Key, Body: 'one', IfNoneMatch: '*' }));
  const failed = (e) => e.$metadata.httpStatusCode === 412;
  await assert.rejects(s3.send(new PutObjectCommand({ Bucket, Key, Body: 'two', IfNoneMatch: '*' })),
    failed, 'create-only on an existing key');
  await assert.rejects(s3.send(new PutObjectCommand({ Bucket, Key, Body: 'two', IfMatch: '"0123"' })),
    failed, 'a stale If-Match');
  const got = await s3.send(new GetObjectCommand({ Bucket, Key }));
  assert.strictEqual(await got.Body.transformToString(), 'one', 'untouched by the refused writes');
  const second = await s3.send(new PutObjectCommand({ Bucket, Key, Body: 'two', IfMatch: first.ETag }));
  await assert.rejects(s3.send(new PutObjectCommand({ Bucket, Key: 'cond/none', Body: 'x', IfMatch: first.ETag })),
    (e) => e.$metadata.httpStatusCode === 404, 'If-Match on a missing key');
  // Racing create-only writers: exactly one wins (checked where the object is published).
  const racers = await Promise.allSettled([0, 1, 2, 3, 4, 5].map((i) =>
    s3.send(new PutObjectCommand({ Bucket, Key: 'cond/race', Body: `writer ${i}`, IfNoneMatch: '*' }))));
  assert.strictEqual(racers.filter((x) => x.status === 'fulfilled').length, 1);
  assert.ok(racers.filter((x) => x.status === 'rejected').every((x) => failed(x.reason)));
  // Reads: 304 for the current ETag, 412 for a stale If-Match, dates compared in seconds.
  await assert.rejects(s3.send(new GetObjectCommand({ Bucket, Key, IfNoneMatch: second.ETag })),
    (e) => e.$metadata.httpStatusCode === 304);
  await assert.rejects(s3.send(new HeadObjectCommand({ Bucket, Key, IfMatch: first.ETag })), failed);
  const fresh = await s3.send(new GetObjectCommand({ Bucket, Key, IfNoneMatch: first.ETag }));
  assert.strictEqual(await fresh.Body.transformToString(), 'two');
  const future = new Date(Date.now() + 3600e3);
  await assert.rejects(s3.send(new GetObjectCommand({ Bucket, Key, IfModifiedSince: future })),
    (e) => e.$metadata.httpStatusCode === 304);
  await assert.rejects(s3.send(new GetObjectCommand({ Bucket, Key, IfUnmodifiedSince: new Date(0) })), failed);
  // CompleteMultipartUpload with If-None-Match: * on a key that exists: 412, nothing replaced.
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key }));
  const p1 = await s3.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: 1, Body: 'three' }));
  await assert.rejects(s3.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId, IfNoneMatch: '*',
    MultipartUpload: { Parts: [{ PartNumber: 1, ETag: p1.ETag }] } })), failed);
  const still = await s3.send(new GetObjectCommand({ Bucket, Key }));
  assert.strictEqual(await still.Body.transformToString(), 'two');
});

test('a completion of 10,000 parts with a checksum each is read whole (about 1.8 MB)', async () => {
  const Key = 'big-complete';
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key }));
  const p1 = await s3.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: 1, Body: 'x' }));
  const Parts = [];
  for (let n = 1; n <= 10000; n++) {
    Parts.push({ PartNumber: n, ETag: n === 1 ? p1.ETag : `"${'0'.repeat(32)}"`, ChecksumCRC32: 'AAAAAA==' });
  }
  // Parsed to the end, not refused as too large (MaxMessageLengthExceeded): the parts it
  // names are then judged (part 1 is too small to be followed by others).
  await assert.rejects(s3.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId,
    MultipartUpload: { Parts } })), (e) => ['InvalidPart', 'EntityTooSmall'].includes(e.name));
  await s3.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId }));
});

test('ListObjects (v1): prefix, delimiter, marker pages, NextMarker', async () => {
  for (const k of ['v1/a', 'v1/b', 'v1/c/1', 'v1/c/2', 'v1/d']) {
    await s3.send(new PutObjectCommand({ Bucket, Key: k, Body: k }));
  }
  const top = await s3.send(new ListObjectsCommand({ Bucket, Prefix: 'v1/', Delimiter: '/' }));
  assert.deepStrictEqual(top.Contents.map((c) => c.Key), ['v1/a', 'v1/b', 'v1/d']);
  assert.deepStrictEqual(top.CommonPrefixes.map((p) => p.Prefix), ['v1/c/']);
  assert.strictEqual(top.IsTruncated, false);
  const seen = [];
  let Marker;
  for (let i = 0; i < 10; i++) {
    const page = await s3.send(new ListObjectsCommand({ Bucket, Prefix: 'v1/', MaxKeys: 2, Marker }));
    seen.push(...(page.Contents || []).map((c) => c.Key));
    assert.strictEqual(page.Marker || undefined, Marker);
    if (!page.IsTruncated) break;
    Marker = page.NextMarker || page.Contents[page.Contents.length - 1].Key;
  }
  assert.deepStrictEqual(seen, ['v1/a', 'v1/b', 'v1/c/1', 'v1/c/2', 'v1/d']);
  // With a delimiter, a page that ends on a group names the group as NextMarker, and the
  // next page starts after every key in it (S3's answer; ceph/s3-tests checks it).
  const p1 = await s3.send(new ListObjectsCommand({ Bucket, Prefix: 'v1/', Delimiter: '/', MaxKeys: 3 }));
  assert.deepStrictEqual(p1.CommonPrefixes.map((p) => p.Prefix), ['v1/c/']);
  assert.strictEqual(p1.NextMarker, 'v1/c/');
  const p2 = await s3.send(new ListObjectsCommand({ Bucket, Prefix: 'v1/', Delimiter: '/', Marker: p1.NextMarker }));
  assert.deepStrictEqual(p2.Contents.map((c) => c.Key), ['v1/d']);
  assert.ok(!p2.CommonPrefixes, 'the group is not listed again');
});

test('DeleteObjects: many keys in one request, missing ones reported deleted, quiet mode', async () => {
  for (const k of ['del/a', 'del/b', 'del/c']) await s3.send(new PutObjectCommand({ Bucket, Key: k, Body: k }));
  const out = await s3.send(new DeleteObjectsCommand({ Bucket, Delete: {
    Objects: [{ Key: 'del/a' }, { Key: 'del/b' }, { Key: 'del/never' }] } }));
  assert.deepStrictEqual(out.Deleted.map((d) => d.Key).sort(), ['del/a', 'del/b', 'del/never']);
  assert.ok(!out.Errors || out.Errors.length === 0);
  const quiet = await s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: [{ Key: 'del/c' }], Quiet: true } }));
  assert.ok(!quiet.Deleted || quiet.Deleted.length === 0);
  const left = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: 'del/' }));
  assert.strictEqual(left.KeyCount, 0);
});

test('ListObjectsV2 echoes StartAfter, gives owners on FetchOwner, URL-encodes on EncodingType=url', async () => {
  for (const k of ['enc/a b', 'enc/c+d', 'enc/é']) await s3.send(new PutObjectCommand({ Bucket, Key: k, Body: k }));
  const page = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: 'enc/', StartAfter: 'enc/a b', FetchOwner: true }));
  assert.strictEqual(page.StartAfter, 'enc/a b');
  assert.deepStrictEqual(page.Contents.map((c) => c.Key), ['enc/c+d', 'enc/é']);
  assert.ok(page.Contents.every((c) => c.Owner && c.Owner.ID), 'owners with FetchOwner');
  const plain = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: 'enc/' }));
  assert.ok(plain.Contents.every((c) => !c.Owner), 'no owner without FetchOwner');
  // The SDK sends EncodingType=url itself and decodes the names: the keys come back exact.
  const encoded = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: 'enc/', EncodingType: 'url' }));
  assert.deepStrictEqual(encoded.Contents.map((c) => decodeURIComponent(c.Key)), ['enc/a b', 'enc/c+d', 'enc/é']);
});

test('buckets: S3 naming rules, DeleteBucket only when empty, the configured bucket kept', async () => {
  for (const name of ['ab', 'Upper', '-lead', 'trail-', 'a..b', '192.168.5.4', 'xn--abc', 'a_b', 'x'.repeat(64)]) {
    await assert.rejects(s3.send(new CreateBucketCommand({ Bucket: name })),
      (e) => e.name === 'InvalidBucketName' && e.$metadata.httpStatusCode === 400, name);
  }
  const b = `del-${process.pid}`;
  await s3.send(new CreateBucketCommand({ Bucket: b }));
  await s3.send(new CreateBucketCommand({ Bucket: b }));  // us-east-1: the owner may repeat it
  await assert.rejects(s3.send(new CreateBucketCommand({ Bucket: `${b}-eu`,
    CreateBucketConfiguration: { LocationConstraint: 'eu-west-1' } })), { name: 'InvalidLocationConstraint' });
  const loc = await s3.send(new GetBucketLocationCommand({ Bucket: b }));
  assert.ok(!loc.LocationConstraint, 'us-east-1 is the empty constraint');
  await s3.send(new PutObjectCommand({ Bucket: b, Key: 'x', Body: 'x' }));
  const mpu = await s3.send(new CreateMultipartUploadCommand({ Bucket: b, Key: 'big' }));
  await assert.rejects(s3.send(new DeleteBucketCommand({ Bucket: b })),
    (e) => e.name === 'BucketNotEmpty' && e.$metadata.httpStatusCode === 409);
  assert.strictEqual((await s3.send(new GetObjectCommand({ Bucket: b, Key: 'x' }))).ContentLength, 1, 'nothing lost');
  await s3.send(new DeleteObjectCommand({ Bucket: b, Key: 'x' }));
  await s3.send(new DeleteBucketCommand({ Bucket: b }));  // an upload in progress is aborted with it
  await assert.rejects(s3.send(new HeadBucketCommand({ Bucket: b })), (e) => e.$metadata.httpStatusCode === 404);
  await assert.rejects(s3.send(new ListPartsCommand({ Bucket: b, Key: 'big', UploadId: mpu.UploadId })),
    (e) => e.$metadata.httpStatusCode === 404);
  await assert.rejects(s3.send(new DeleteBucketCommand({ Bucket: b })), { name: 'NoSuchBucket' });
  // A bucket Kiln stores its own assets in (objects.buckets) is never deleted, even empty:
  // test_objects.py configures `kiln-spare` beside `kiln`.
  await s3.send(new HeadBucketCommand({ Bucket: 'kiln-spare' }));
  await assert.rejects(s3.send(new DeleteBucketCommand({ Bucket: 'kiln-spare' })),
    (e) => e.name === 'AccessDenied' && e.$metadata.httpStatusCode === 403);
  await s3.send(new HeadBucketCommand({ Bucket: 'kiln-spare' }));
});

test('ListObjectVersions on the unversioned store: every object once, as version null, in pages', async () => {
  const keys = ['ver/a', 'ver/b', 'ver/c/1', 'ver/c/2', 'ver/d'];
  for (const k of keys) await s3.send(new PutObjectCommand({ Bucket, Key: k, Body: k }));
  const all = await s3.send(new ListObjectVersionsCommand({ Bucket, Prefix: 'ver/' }));
  assert.deepStrictEqual(all.Versions.map((v) => [v.Key, v.VersionId, v.IsLatest]),
    keys.map((k) => [k, 'null', true]));
  const seen = [];
  let KeyMarker, VersionIdMarker;
  for (let i = 0; i < 10; i++) {
    const page = await s3.send(new ListObjectVersionsCommand({ Bucket, Prefix: 'ver/', Delimiter: '/',
      MaxKeys: 1, KeyMarker, VersionIdMarker }));
    seen.push(...(page.Versions || []).map((v) => v.Key), ...(page.CommonPrefixes || []).map((p) => p.Prefix));
    if (!page.IsTruncated) break;
    ({ NextKeyMarker: KeyMarker, NextVersionIdMarker: VersionIdMarker } = page);
  }
  assert.deepStrictEqual(seen, ['ver/a', 'ver/b', 'ver/c/', 'ver/d'], 'a group is listed once');
  // DeleteObjects with VersionId: "null" is each object's one version; any other names none.
  const out = await s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: [
    { Key: 'ver/a', VersionId: 'null' }, { Key: 'ver/b', VersionId: 'abc' }] } }));
  assert.deepStrictEqual(out.Deleted.map((d) => [d.Key, d.VersionId]), [['ver/a', 'null']]);
  assert.deepStrictEqual(out.Errors.map((e) => [e.Key, e.Code]), [['ver/b', 'InvalidArgument']]);
  assert.strictEqual((await s3.send(new HeadObjectCommand({ Bucket, Key: 'ver/b' }))).ContentLength, 5, 'ver/b kept');
  await assert.rejects(s3.send(new GetObjectCommand({ Bucket, Key: 'ver/b', VersionId: 'abc' })),
    (e) => e.$metadata.httpStatusCode === 400);
  const v = await s3.send(new GetObjectCommand({ Bucket, Key: 'ver/b', VersionId: 'null' }));
  assert.strictEqual(await v.Body.transformToString(), 'ver/b');
});

test('a repeated CompleteMultipartUpload is answered like the first while its object stands', async () => {
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key: 'again', CacheControl: 'max-age=60' }));
  const p = await s3.send(new UploadPartCommand({ Bucket, Key: 'again', UploadId, PartNumber: 1, Body: 'one part' }));
  const done = { Bucket, Key: 'again', UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: p.ETag }] } };
  const first = await s3.send(new CompleteMultipartUploadCommand(done));
  const second = await s3.send(new CompleteMultipartUploadCommand(done));
  assert.strictEqual(second.ETag, first.ETag);
  assert.strictEqual((await s3.send(new HeadObjectCommand({ Bucket, Key: 'again' }))).CacheControl, 'max-age=60');
  // Once the key holds another object, the upload is gone.
  await s3.send(new PutObjectCommand({ Bucket, Key: 'again', Body: 'replaced' }));
  await assert.rejects(s3.send(new CompleteMultipartUploadCommand(done)), { name: 'NoSuchUpload' });
  assert.strictEqual(await (await s3.send(new GetObjectCommand({ Bucket, Key: 'again' }))).Body.transformToString(), 'replaced');
});

test('stored headers (Cache-Control, Content-Disposition, Expires...) and the 2 KB metadata limit', async () => {
  const Expires = new Date(Math.floor(Date.now() / 1000 + 3600) * 1000);
  await s3.send(new PutObjectCommand({ Bucket, Key: 'headers', Body: 'h', CacheControl: 'no-cache',
    ContentDisposition: 'attachment; filename="h.txt"', ContentEncoding: 'identity', ContentLanguage: 'pt-BR', Expires }));
  const h = await s3.send(new HeadObjectCommand({ Bucket, Key: 'headers' }));
  assert.strictEqual(h.CacheControl, 'no-cache');
  assert.strictEqual(h.ContentDisposition, 'attachment; filename="h.txt"');
  assert.strictEqual(h.ContentEncoding, 'identity');
  assert.strictEqual(h.ContentLanguage, 'pt-BR');
  assert.strictEqual(h.Expires.getTime(), Expires.getTime());
  assert.deepStrictEqual(h.Metadata, {}, 'stored headers are not user metadata');
  await assert.rejects(s3.send(new PutObjectCommand({ Bucket, Key: 'meta-big', Body: 'x', Metadata: { big: 'v'.repeat(2100) } })),
    (e) => e.name === 'MetadataTooLarge' && e.$metadata.httpStatusCode === 400);
  await assert.rejects(s3.send(new HeadObjectCommand({ Bucket, Key: 'meta-big' })), (e) => e.$metadata.httpStatusCode === 404);
});

test('ListBuckets: creation dates, prefix and pages', async () => {
  const before = Date.now() - 2000;
  for (const b of ['lb-a', 'lb-b', 'lb-c']) await s3.send(new CreateBucketCommand({ Bucket: b }));
  const all = await s3.send(new ListBucketsCommand({ Prefix: 'lb-' }));
  assert.deepStrictEqual(all.Buckets.map((b) => b.Name), ['lb-a', 'lb-b', 'lb-c']);
  assert.ok(all.Buckets.every((b) => b.CreationDate.getTime() >= before), 'real creation dates');
  const seen = [];
  let ContinuationToken;
  for (let i = 0; i < 5; i++) {
    const page = await s3.send(new ListBucketsCommand({ Prefix: 'lb-', MaxBuckets: 2, ContinuationToken }));
    seen.push(...page.Buckets.map((b) => b.Name));
    if (!page.ContinuationToken) break;
    ContinuationToken = page.ContinuationToken;
  }
  assert.deepStrictEqual(seen, ['lb-a', 'lb-b', 'lb-c']);
  for (const b of ['lb-a', 'lb-b', 'lb-c']) await s3.send(new DeleteBucketCommand({ Bucket: b }));
});

test('multipart checksums: the algorithm declared, parts recorded and checked, COMPOSITE and FULL_OBJECT answered and stored', async () => {
  const parts = [crypto.randomBytes(5 << 20), crypto.randomBytes(5 << 20), crypto.randomBytes(1234)];
  const whole = Buffer.concat(parts);
  const field = { CRC32: 'ChecksumCRC32', CRC32C: 'ChecksumCRC32C', CRC64NVME: 'ChecksumCRC64NVME', SHA256: 'ChecksumSHA256' };
  // The oracle for a whole object's checksum: the SDK's own, sent with a single PUT (which
  // the store verifies) and read back with checksum mode.
  const single = async (alg) => {
    await s3.send(new PutObjectCommand({ Bucket, Key: `ck/whole-${alg}`, Body: whole, ChecksumAlgorithm: alg }));
    return (await s3.send(new HeadObjectCommand({ Bucket, Key: `ck/whole-${alg}`, ChecksumMode: 'ENABLED' })))[field[alg]];
  };
  for (const [alg, type] of [['CRC32', 'COMPOSITE'], ['SHA256', 'COMPOSITE'], ['CRC32', 'FULL_OBJECT'],
    ['CRC32C', 'FULL_OBJECT'], ['CRC64NVME', 'FULL_OBJECT']]) {
    const Key = `ck/${alg}-${type}`;
    const created = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key, ChecksumAlgorithm: alg, ChecksumType: type }));
    assert.strictEqual(created.ChecksumAlgorithm, alg);
    const done = [];
    for (let i = 0; i < parts.length; i++) {
      const p = await s3.send(new UploadPartCommand({ Bucket, Key, UploadId: created.UploadId, PartNumber: i + 1,
        Body: parts[i], ChecksumAlgorithm: alg }));
      assert.ok(p[field[alg]], `${alg}: the part's checksum is answered`);
      done.push({ PartNumber: i + 1, ETag: p.ETag, [field[alg]]: p[field[alg]] });
    }
    const listed = await s3.send(new ListPartsCommand({ Bucket, Key, UploadId: created.UploadId }));
    assert.deepStrictEqual(listed.Parts.map((p) => p[field[alg]]), done.map((d) => d[field[alg]]));
    // A part named with another checksum than it was uploaded with: InvalidPart.
    const bad = done.map((d, i) => (i === 1 ? { ...d, [field[alg]]: done[0][field[alg]] } : d));
    await assert.rejects(s3.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId: created.UploadId,
      MultipartUpload: { Parts: bad } })), { name: 'InvalidPart' });
    const out = await s3.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId: created.UploadId,
      MultipartUpload: { Parts: done } }));
    let expected;
    if (type === 'COMPOSITE') {
      const h = crypto.createHash(alg === 'SHA256' ? 'sha256' : 'md5');
      if (alg === 'SHA256') {
        for (const d of done) h.update(Buffer.from(d[field[alg]], 'base64'));
        expected = `${h.digest('base64')}-3`;
      } else {
        // CRC32 of the parts' raw CRC32s: the SDK's own CRC32 of those 12 bytes, by a PUT.
        const raw = Buffer.concat(done.map((d) => Buffer.from(d[field[alg]], 'base64')));
        await s3.send(new PutObjectCommand({ Bucket, Key: 'ck/raw', Body: raw, ChecksumAlgorithm: 'CRC32' }));
        const r = await s3.send(new HeadObjectCommand({ Bucket, Key: 'ck/raw', ChecksumMode: 'ENABLED' }));
        expected = `${r.ChecksumCRC32}-3`;
      }
    } else {
      expected = await single(alg);
    }
    assert.strictEqual(out[field[alg]], expected, `${alg} ${type}`);
    assert.strictEqual(out.ChecksumType, type);
    const head = await s3.send(new HeadObjectCommand({ Bucket, Key, ChecksumMode: 'ENABLED' }));
    assert.strictEqual(head[field[alg]], expected, 'stored with the object');
    const plain = await s3.send(new HeadObjectCommand({ Bucket, Key }));
    assert.strictEqual(plain[field[alg]], undefined, 'only with checksum mode');
    const got = await s3.send(new GetObjectCommand({ Bucket, Key }));
    assert.ok(Buffer.from(await got.Body.transformToByteArray()).equals(whole));
  }
  // A wrong whole-object checksum on the completion: BadDigest, nothing stored.
  const c = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key: 'ck/bad', ChecksumAlgorithm: 'SHA256' }));
  const p = await s3.send(new UploadPartCommand({ Bucket, Key: 'ck/bad', UploadId: c.UploadId, PartNumber: 1, Body: 'x', ChecksumAlgorithm: 'SHA256' }));
  await assert.rejects(s3.send(new CompleteMultipartUploadCommand({ Bucket, Key: 'ck/bad', UploadId: c.UploadId,
    ChecksumSHA256: 'Ok6Cs5b96ux6+MWQkJO7UBT5sKPBeXBLwvj/hK89smg=-1',
    MultipartUpload: { Parts: [{ PartNumber: 1, ETag: p.ETag, ChecksumSHA256: p.ChecksumSHA256 }] } })), { name: 'BadDigest' });
  await assert.rejects(s3.send(new HeadObjectCommand({ Bucket, Key: 'ck/bad' })), (e) => e.$metadata.httpStatusCode === 404);
  await assert.rejects(s3.send(new CreateMultipartUploadCommand({ Bucket, Key: 'ck/x', ChecksumAlgorithm: 'SHA256', ChecksumType: 'FULL_OBJECT' })),
    (e) => e.$metadata.httpStatusCode === 400);
});

test('bucket CORS configuration: rules decide preflights and responses; without one, objects.cors_origins', async () => {
  const b = 'cors-rules';
  await s3.send(new CreateBucketCommand({ Bucket: b }));
  await assert.rejects(s3.send(new GetBucketCorsCommand({ Bucket: b })), { name: 'NoSuchCORSConfiguration' });
  await s3.send(new PutBucketCorsCommand({ Bucket: b, CORSConfiguration: { CORSRules: [
    { AllowedOrigins: ['https://*.studio.example'], AllowedMethods: ['GET', 'PUT'], AllowedHeaders: ['content-type', 'x-amz-*'],
      ExposeHeaders: ['ETag'], MaxAgeSeconds: 600 },
    { AllowedOrigins: ['*'], AllowedMethods: ['GET'] }] } }));
  const got = await s3.send(new GetBucketCorsCommand({ Bucket: b }));
  assert.deepStrictEqual(got.CORSRules[0].AllowedOrigins, ['https://*.studio.example']);
  assert.strictEqual(got.CORSRules[0].MaxAgeSeconds, 600);
  const preflight = (origin, method, headers) => fetch(`${endpoint}/${b}/x`, { method: 'OPTIONS', headers: {
    Origin: origin, 'Access-Control-Request-Method': method, ...(headers ? { 'Access-Control-Request-Headers': headers } : {}) } });
  let r = await preflight('https://editor.studio.example', 'PUT', 'content-type, x-amz-date');
  assert.strictEqual(r.status, 200);
  assert.strictEqual(r.headers.get('access-control-allow-origin'), 'https://editor.studio.example');
  assert.strictEqual(r.headers.get('access-control-max-age'), '600');
  assert.strictEqual(r.headers.get('access-control-allow-headers'), 'content-type, x-amz-date');
  r = await preflight('https://editor.studio.example', 'DELETE');
  assert.strictEqual(r.status, 403, 'a method no rule allows');
  r = await preflight('https://editor.studio.example', 'PUT', 'x-secret');
  assert.strictEqual(r.status, 403, 'a header no rule allows');
  r = await preflight('https://elsewhere.example', 'GET');
  assert.strictEqual(r.headers.get('access-control-allow-origin'), '*', 'the second rule');
  r = await preflight('https://elsewhere.example', 'PUT');
  assert.strictEqual(r.status, 403);
  await assert.rejects(s3.send(new PutBucketCorsCommand({ Bucket: b, CORSConfiguration: { CORSRules: [
    { AllowedOrigins: ['*'], AllowedMethods: ['PATCH'] }] } })), (e) => e.$metadata.httpStatusCode === 400);
  await s3.send(new DeleteBucketCorsCommand({ Bucket: b }));
  // Without a configuration the store's objects.cors_origins (http://editor.example here) decide.
  r = await preflight('https://editor.studio.example', 'PUT');
  assert.strictEqual(r.status, 403);
  r = await preflight('http://editor.example', 'PUT');
  assert.strictEqual(r.status, 200);
  await s3.send(new DeleteBucketCommand({ Bucket: b }));
});

test('conditional deletes: If-Match on DeleteObject, ETag in DeleteObjects; by date or size refused', async () => {
  await s3.send(new PutObjectCommand({ Bucket, Key: 'cd/a', Body: 'a' }));
  await s3.send(new PutObjectCommand({ Bucket, Key: 'cd/b', Body: 'b' }));
  await assert.rejects(s3.send(new DeleteObjectCommand({ Bucket, Key: 'cd/a', IfMatch: '"00000000000000000000000000000000"' })),
    (e) => e.$metadata.httpStatusCode === 412);
  assert.strictEqual((await s3.send(new HeadObjectCommand({ Bucket, Key: 'cd/a' }))).ContentLength, 1, 'kept');
  await s3.send(new DeleteObjectCommand({ Bucket, Key: 'cd/a', IfMatch: `"${md5('a')}"` }));
  await assert.rejects(s3.send(new HeadObjectCommand({ Bucket, Key: 'cd/a' })), (e) => e.$metadata.httpStatusCode === 404);
  const out = await s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: [
    { Key: 'cd/b', ETag: '"00000000000000000000000000000000"' }] } }));
  assert.deepStrictEqual(out.Errors.map((e) => [e.Key, e.Code]), [['cd/b', 'PreconditionFailed']]);
  assert.strictEqual((await s3.send(new HeadObjectCommand({ Bucket, Key: 'cd/b' }))).ContentLength, 1, 'kept');
  const bySize = await signedFetch('DELETE', `/${Bucket}/cd/b`, { headers: { 'x-amz-if-match-size': '1' } });
  assert.strictEqual(bySize.status, 501);
  assert.strictEqual((await s3.send(new HeadObjectCommand({ Bucket, Key: 'cd/b' }))).ContentLength, 1, 'kept');
});

test('an unknown query parameter is refused and changes nothing (a new S3 subresource is not the plain operation)', async () => {
  await s3.send(new PutObjectCommand({ Bucket, Key: 'unk/a', Body: 'keep me' }));
  await s3.send(new CreateBucketCommand({ Bucket: 'unk-bucket' }));
  for (const [method, path, query] of [['PUT', `/${Bucket}/unk/a`, { abac: '' }], ['DELETE', `/${Bucket}/unk/a`, { abac: '' }],
    ['DELETE', '/unk-bucket', { metadataTable: '' }], ['PUT', '/unk-bucket', { abac: '' }], ['GET', `/${Bucket}/unk/a`, { whatever: '1' }]]) {
    const r = await signedFetch(method, path, { query, body: method === 'PUT' ? '<x/>' : '' });
    assert.strictEqual(r.status, 501, `${method} ${path} ${JSON.stringify(query)}: ${r.text}`);
    assert.match(r.text, /NotImplemented/);
  }
  const got = await s3.send(new GetObjectCommand({ Bucket, Key: 'unk/a' }));
  assert.strictEqual(await got.Body.transformToString(), 'keep me');
  await s3.send(new HeadBucketCommand({ Bucket: 'unk-bucket' }));
  await s3.send(new DeleteBucketCommand({ Bucket: 'unk-bucket' }));
  // A presigned URL's hoisted x-amz-* parameters count as the headers they are.
  const url = await getSignedUrl(presigner, new PutObjectCommand({ Bucket, Key: 'unk/acl', ACL: 'public-read' }), { expiresIn: 60 });
  assert.match(url, /x-amz-acl=public-read/);
  const put = await fetch(url, { method: 'PUT', body: 'x' });
  assert.strictEqual(put.status, 501, 'a public-read ACL in the query is refused like the header');
});

test('XML bodies are parsed as XML: character references decoded, malformed documents refused with nothing changed', async () => {
  const keys = ['xr/nl\nkey', 'xr/cr\rkey', 'xr/ls\u2028key', 'xr/amp&key'];
  for (const Key of keys) await s3.send(new PutObjectCommand({ Bucket, Key, Body: 'x' }));
  const out = await s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: keys.map((Key) => ({ Key })) } }));
  assert.strictEqual(out.Deleted.length, keys.length);
  for (const Key of keys) {
    await assert.rejects(s3.send(new HeadObjectCommand({ Bucket, Key })), (e) => e.$metadata.httpStatusCode === 404, JSON.stringify(Key));
  }
  await s3.send(new PutObjectCommand({ Bucket, Key: 'xr/keep', Body: 'x' }));
  for (const body of ['<Delete><Object><Key>xr/keep</Key></Object>', '<Other><Object><Key>xr/keep</Key></Object></Other>',
    'not xml at all', '<Delete><Object><Key>xr/keep</Key></Object></Delete><Delete/>']) {
    const r = await signedFetch('POST', `/${Bucket}`, { query: { delete: '' }, headers: { 'content-md5': md5b64(body) }, body });
    assert.strictEqual(r.status, 400, body);
    assert.match(r.text, /MalformedXML/, body);
  }
  assert.strictEqual((await s3.send(new HeadObjectCommand({ Bucket, Key: 'xr/keep' }))).ContentLength, 1, 'nothing deleted');
  const bad = await signedFetch('PUT', '/xr-not-made', { body: 'this is not xml' });
  assert.strictEqual(bad.status, 400);
  await assert.rejects(s3.send(new HeadBucketCommand({ Bucket: 'xr-not-made' })), (e) => e.$metadata.httpStatusCode === 404);
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key: 'xr/mpu' }));
  const p = await s3.send(new UploadPartCommand({ Bucket, Key: 'xr/mpu', UploadId, PartNumber: 1, Body: 'x' }));
  const body = `<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>${p.ETag}</ETag></Part>`;
  const r = await signedFetch('POST', `/${Bucket}/xr/mpu`, { query: { uploadId: UploadId }, body });
  assert.strictEqual(r.status, 400);
  await assert.rejects(s3.send(new HeadObjectCommand({ Bucket, Key: 'xr/mpu' })), (e) => e.$metadata.httpStatusCode === 404);
});

test('strict numbers, one checksum per request, If-Range, case-insensitive range units, early EntityTooLarge', async () => {
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key: 'sn/mpu' }));
  for (const partNumber of ['1.5', '1abc', ' 2', '0', '10001', '']) {
    const r = await signedFetch('PUT', `/${Bucket}/sn/mpu`, { query: { partNumber, uploadId: UploadId }, body: 'x' });
    assert.strictEqual(r.status, 400, JSON.stringify(partNumber));
  }
  const listed = await signedFetch('GET', `/${Bucket}/sn/mpu`, { query: { uploadId: UploadId, 'max-parts': '1abc' } });
  assert.strictEqual(listed.status, 400);
  const crc = await signedFetch('PUT', `/${Bucket}/sn/two`, { body: 'hello', headers: {
    'x-amz-checksum-crc32': 'AAAAAA==', 'x-amz-checksum-sha1': crypto.createHash('sha1').update('hello').digest('base64') } });
  assert.strictEqual(crc.status, 400);
  assert.match(crc.text, /single x-amz-checksum/);
  await assert.rejects(s3.send(new HeadObjectCommand({ Bucket, Key: 'sn/two' })), (e) => e.$metadata.httpStatusCode === 404);
  await s3.send(new PutObjectCommand({ Bucket, Key: 'sn/r', Body: '0123456789' }));
  const etag = `"${md5('0123456789')}"`;
  // If-Range (RFC 9110 section 13.1.5; the SDK has no field for it).
  const stale = await signedFetch('GET', `/${Bucket}/sn/r`, { headers: { range: 'bytes=0-1', 'if-range': '"0000"' } });
  assert.strictEqual(stale.status, 200, 'a stale If-Range gets the whole object');
  assert.strictEqual(stale.text, '0123456789');
  const fresh = await signedFetch('GET', `/${Bucket}/sn/r`, { headers: { range: 'bytes=0-1', 'if-range': etag } });
  assert.strictEqual(fresh.status, 206);
  assert.strictEqual(fresh.text, '01');
  const upper = await s3.send(new GetObjectCommand({ Bucket, Key: 'sn/r', Range: 'Bytes=2-3' }));
  assert.strictEqual(await upper.Body.transformToString(), '23');
  const big = await signedFetch('PUT', `/${Bucket}/sn/huge`, { headers: { 'x-amz-decoded-content-length': String(6e12) }, body: 'x' });
  assert.strictEqual(big.status, 400);
  assert.match(big.text, /EntityTooLarge/);
  const notText = await signedFetch('PUT', `/${Bucket}/sn/%FF`, { body: 'x' });
  assert.strictEqual(notText.status, 400, 'a key that is not UTF-8');
});

test('ListMultipartUploads pages past 1,000 and past a group, and lists every upload once', async () => {
  const ids = [];
  for (let i = 0; i < 1005; i++) {
    const Key = `lmu/k${String(i).padStart(5, '0')}`;
    ids.push((await s3.send(new CreateMultipartUploadCommand({ Bucket, Key }))).UploadId);
  }
  for (const Key of ['lmu/z/1', 'lmu/z/2', 'lmu/zz']) ids.push((await s3.send(new CreateMultipartUploadCommand({ Bucket, Key }))).UploadId);
  const seen = [];
  let KeyMarker, UploadIdMarker;
  for (let i = 0; i < 10; i++) {
    const page = await s3.send(new ListMultipartUploadsCommand({ Bucket, Prefix: 'lmu/', KeyMarker, UploadIdMarker }));
    seen.push(...(page.Uploads || []).map((u) => u.UploadId));
    if (!page.IsTruncated) break;
    ({ NextKeyMarker: KeyMarker, NextUploadIdMarker: UploadIdMarker } = page);
  }
  assert.deepStrictEqual(seen.sort(), [...ids].sort(), 'every upload, once');
  const groups = [];
  KeyMarker = 'lmu/k01002';
  UploadIdMarker = undefined;
  for (let i = 0; i < 20; i++) {
    const page = await s3.send(new ListMultipartUploadsCommand({ Bucket, Prefix: 'lmu/', Delimiter: '/', MaxUploads: 1, KeyMarker, UploadIdMarker }));
    groups.push(...(page.CommonPrefixes || []).map((p) => p.Prefix), ...(page.Uploads || []).map((u) => u.Key));
    if (!page.IsTruncated) break;
    ({ NextKeyMarker: KeyMarker, NextUploadIdMarker: UploadIdMarker } = page);
  }
  assert.deepStrictEqual(groups, ['lmu/k01003', 'lmu/k01004', 'lmu/z/', 'lmu/zz'], 'a group once, then on');
  for (const u of (await s3.send(new ListMultipartUploadsCommand({ Bucket, Prefix: 'lmu/' }))).Uploads || []) {
    await s3.send(new AbortMultipartUploadCommand({ Bucket, Key: u.Key, UploadId: u.UploadId }));
  }
});

test('UploadPartCopy into an upload that declared a checksum algorithm records the part\'s checksum', async () => {
  const src = crypto.randomBytes(1000);
  await s3.send(new PutObjectCommand({ Bucket, Key: 'pcc/src', Body: src }));
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key: 'pcc/dst', ChecksumAlgorithm: 'SHA256' }));
  const p = await s3.send(new UploadPartCopyCommand({ Bucket, Key: 'pcc/dst', UploadId, PartNumber: 1, CopySource: `${Bucket}/pcc/src` }));
  const sha = crypto.createHash('sha256').update(src).digest('base64');
  assert.strictEqual(p.CopyPartResult.ChecksumSHA256, sha);
  const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket, Key: 'pcc/dst', UploadId,
    MultipartUpload: { Parts: [{ PartNumber: 1, ETag: p.CopyPartResult.ETag, ChecksumSHA256: sha }] } }));
  assert.strictEqual(done.ChecksumSHA256, `${crypto.createHash('sha256').update(Buffer.from(sha, 'base64')).digest('base64')}-1`);
});

test('a key being overwritten is always readable: GET and CopyObject see the old or the new object, never NoSuchKey', async () => {
  const a = crypto.randomBytes(200000), b = crypto.randomBytes(200000);
  await s3.send(new PutObjectCommand({ Bucket, Key: 'ow/k', Body: a }));
  let stop = false;
  const writer = (async () => {
    for (let i = 0; !stop && i < 400; i++) await s3.send(new PutObjectCommand({ Bucket, Key: 'ow/k', Body: i % 2 ? a : b }));
  })();
  const failures = [];
  const reader = async (n) => {
    for (let i = 0; i < 60; i++) {
      try {
        const got = Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket, Key: 'ow/k' }))).Body.transformToByteArray());
        if (!got.equals(a) && !got.equals(b)) failures.push(`reader ${n}: a mixed body`);
        await s3.send(new CopyObjectCommand({ Bucket, Key: `ow/copy${n}`, CopySource: `${Bucket}/ow/k` }));
      } catch (e) {
        failures.push(`reader ${n}: ${e.name}`);
      }
    }
  };
  await Promise.all([reader(1), reader(2), reader(3)]);
  stop = true;
  await writer;
  assert.deepStrictEqual(failures, []);
});

test('second review: deep or hostile XML, header injection, capitalised hoisted headers, ignored asks', async () => {
  // Nesting: refused before the parser recurses; the store stays up.
  const deep = `<Delete>${'<a>'.repeat(9000)}${'</a>'.repeat(9000)}</Delete>`;
  let r = await signedFetch('POST', `/${Bucket}`, { query: { delete: '' }, headers: { 'content-md5': md5b64(deep) }, body: deep });
  assert.strictEqual(r.status, 400);
  for (const body of ['<!DOCTYPE d [<!ENTITY e "x">]><Delete><Object><Key>&e;</Key></Object></Delete>',
    '<Delete><Object><Key>a &bogus; b</Key></Object></Delete>', '<Delete><Object><Key>a<Junk/>b</Key></Object></Delete>',
    '<Delete><Object><Key>nul&#0;key</Key></Object></Delete>', '<Delete><Object><Key>&#xD800;</Key></Object></Delete>']) {
    r = await signedFetch('POST', `/${Bucket}`, { query: { delete: '' }, headers: { 'content-md5': md5b64(body) }, body });
    assert.strictEqual(r.status, 400, body);
    assert.match(r.text, /MalformedXML/, body);
  }
  await s3.send(new HeadBucketCommand({ Bucket }));  // alive
  // CORS values become header lines: CR/LF and other controls are refused.
  await s3.send(new CreateBucketCommand({ Bucket: 'inj-cors' }));
  const cors = '<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>' +
    '<ExposeHeader>ETag&#x0D;&#x0A;Set-Cookie: injected=1</ExposeHeader></CORSRule></CORSConfiguration>';
  r = await signedFetch('PUT', '/inj-cors', { query: { cors: '' }, headers: { 'content-md5': md5b64(cors) }, body: cors });
  assert.strictEqual(r.status, 400);
  const good = '<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>';
  r = await signedFetch('PUT', '/inj-cors', { query: { cors: '' }, body: good });
  assert.strictEqual(r.status, 400, 'PutBucketCors needs Content-MD5, as S3');
  r = await signedFetch('PUT', '/inj-cors', { query: { cors: '' }, headers: { 'content-md5': md5b64('other') }, body: good });
  assert.match(r.text, /BadDigest/);
  r = await signedFetch('PUT', '/inj-cors', { query: { cors: '' }, headers: { 'content-md5': 'not-md5' }, body: good });
  assert.match(r.text, /InvalidDigest/);
  await assert.rejects(s3.send(new GetBucketCorsCommand({ Bucket: 'inj-cors' })), { name: 'NoSuchCORSConfiguration' });
  const tags = '<CreateBucketConfiguration><Tags><Tag><Key>k</Key><Value>v</Value></Tag></Tags></CreateBucketConfiguration>';
  r = await signedFetch('PUT', '/inj-tags', { body: tags });
  assert.strictEqual(r.status, 501);
  await s3.send(new DeleteBucketCommand({ Bucket: 'inj-cors' }));
  // Hoisted headers are headers whatever their case.
  await s3.send(new PutObjectCommand({ Bucket, Key: 'hz/k', Body: 'keep' }));
  for (const [method, query] of [['PUT', { 'X-Amz-Acl': 'public-read' }], ['PUT', { 'X-Amz-Server-Side-Encryption': 'AES256' }],
    ['DELETE', { 'X-Amz-If-Match-Size': '999' }], ['PUT', { 'X-Amz-Checksum-Crc32': 'AAAAAA==' }]]) {
    r = await signedFetch(method, `/${Bucket}/hz/k`, { query, body: method === 'PUT' ? 'changed' : '' });
    assert.ok(r.status === 501 || r.status === 400, `${method} ${JSON.stringify(query)}: ${r.status}`);
  }
  assert.strictEqual(await (await s3.send(new GetObjectCommand({ Bucket, Key: 'hz/k' }))).Body.transformToString(), 'keep');
  // Asks the store does not honour are refused, never ignored.
  for (const [method, headers] of [['PUT', { 'x-amz-write-offset-bytes': '2' }], ['PUT', { 'x-amz-storage-class': 'GLACIER' }],
    ['PUT', { 'if-unmodified-since': 'Mon, 01 Jan 1990 00:00:00 GMT' }], ['DELETE', { 'if-none-match': `"${md5('keep')}"` }],
    ['DELETE', { 'if-unmodified-since': 'Mon, 01 Jan 1990 00:00:00 GMT' }]]) {
    r = await signedFetch(method, `/${Bucket}/hz/k`, { headers, body: method === 'PUT' ? 'changed' : '' });
    assert.strictEqual(r.status, 501, `${method} ${JSON.stringify(headers)}`);
  }
  for (const headers of [{ 'x-amz-checksum-sha512': 'AAAA' }, { 'x-amz-checksum-crc32': '' }]) {
    r = await signedFetch('PUT', `/${Bucket}/hz/k`, { headers, body: 'changed' });
    assert.strictEqual(r.status, 400, JSON.stringify(headers));
  }
  r = await signedFetch('GET', `/${Bucket}/hz/k`, { headers: { 'x-amz-expected-bucket-owner': '123456789012' } });
  assert.strictEqual(r.status, 403);
  assert.strictEqual(await (await s3.send(new GetObjectCommand({ Bucket, Key: 'hz/k' }))).Body.transformToString(), 'keep');
  // If-Match takes a list; a date in If-Range must be Last-Modified exactly.
  r = await signedFetch('PUT', `/${Bucket}/hz/k`, { headers: { 'if-match': `"0000", "${md5('keep')}"` }, body: 'kept2' });
  assert.strictEqual(r.status, 200);
  r = await signedFetch('GET', `/${Bucket}/hz/k`, { headers: { range: 'bytes=0-1', 'if-range': 'Fri, 01 Jan 2100 00:00:00 GMT' } });
  assert.strictEqual(r.status, 200, 'a date that is not Last-Modified: the whole object');
  // Keys XML 1.0 cannot list are refused.
  r = await signedFetch('PUT', `/${Bucket}/hz/ctl%01key`, { body: 'x' });
  assert.strictEqual(r.status, 400);
});

test('second review: aws-chunked sizes held to the declared length; repeated completions name the same parts; x-amz-mp-object-size', async () => {
  const data = 'hello world!!!!!!!!';  // 19 bytes
  const chunked = `${data.length.toString(16)}\r\n${data}\r\n0\r\n\r\n`;
  const base = { 'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER', 'content-encoding': 'aws-chunked' };
  let r = await signedFetch('PUT', `/${Bucket}/ck2/a`, { headers: { ...base, 'x-amz-decoded-content-length': '5' }, body: chunked });
  assert.strictEqual(r.status, 400);
  r = await signedFetch('PUT', `/${Bucket}/ck2/a`, { headers: base, body: chunked });
  assert.strictEqual(r.status, 411);
  r = await signedFetch('PUT', `/${Bucket}/ck2/a`, { headers: { ...base, 'x-amz-decoded-content-length': '19' }, body: chunked });
  assert.strictEqual(r.status, 200, r.text);
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key: 'ck2/mpu', ChecksumAlgorithm: 'CRC32' }));
  const p = await s3.send(new UploadPartCommand({ Bucket, Key: 'ck2/mpu', UploadId, PartNumber: 1, Body: 'xyz', ChecksumAlgorithm: 'CRC32' }));
  const listed = await s3.send(new ListPartsCommand({ Bucket, Key: 'ck2/mpu', UploadId }));
  assert.strictEqual(listed.ChecksumAlgorithm, 'CRC32');
  const Parts = [{ PartNumber: 1, ETag: p.ETag }];
  await assert.rejects(s3.send(new CompleteMultipartUploadCommand({ Bucket, Key: 'ck2/mpu', UploadId, MpuObjectSize: 4,
    MultipartUpload: { Parts } })), (e) => e.$metadata.httpStatusCode === 400);
  await s3.send(new CompleteMultipartUploadCommand({ Bucket, Key: 'ck2/mpu', UploadId, MpuObjectSize: 3, MultipartUpload: { Parts } }));
  await assert.rejects(s3.send(new CompleteMultipartUploadCommand({ Bucket, Key: 'ck2/mpu', UploadId,
    MultipartUpload: { Parts: [{ PartNumber: 1, ETag: `"${'0'.repeat(32)}"` }] } })), { name: 'NoSuchUpload' });
});
