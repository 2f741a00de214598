// @kiln/sdk: a typed client for everything Kiln serves (docs/sdk.md).
export * from './backoff.js'
export * from './collab.js'
export * from './emitter.js'
export type * as Protocol from './generated/protocol.js'
export type {
  AckFrame, CanonicalOp, ClientFrame, CreateOp, DeleteOp, EphBatchFrame, EphEntry, JoinedFrame, MoveOp, NackCode,
  NackFrame, NotifyFrame, OpsFrame, PresenceFrame, PresenceMember, SceneOp, ServerFrame, SetOp, Snapshot, WelcomeFrame,
  AccessNotification, AssetNotification,
} from './generated/protocol.js'
export type { components, operations, paths } from './generated/openapi.js'
export * from './limits.js'
export * from './lod.js'
export * from './replica.js'
export * from './rest.js'
export * from './scene.js'
export * from './term.js'
export * from './uploads.js'
