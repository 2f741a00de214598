// The LOD selection mirror on the vectors the C++ library is tested on
// (tests/fixtures/lod_selection/cases.json, LodSelection.AgreesWithTheSharedVectors).
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { type Camera, type SelectEntity, selectLevels, screenSpaceError } from '../src/lod.js'

type V3 = [number, number, number]
interface Case {
  name: string
  camera: { position: V3; direction: V3; fovy: number; viewport: [number, number]; near: number }
  options: { max_screen_space_error: number; hysteresis: number; memory_budget_bytes: number }
  entities: { center: V3; radius: number; scale?: number; loaded?: number; levels: [number, number][] }[]
  expect: { level: number[]; order: number[]; bytes: number; over_budget: boolean }
}

const file = path.resolve(__dirname, '../../../tests/fixtures/lod_selection/cases.json')
const cases = (JSON.parse(readFileSync(file, 'utf8')) as { cases: Case[] }).cases

describe('LOD selection agrees with the shared vectors', () => {
  it('has the vectors', () => expect(cases.length).toBeGreaterThanOrEqual(5))
  for (const c of cases) {
    it(c.name, () => {
      const camera: Camera = {
        position: c.camera.position,
        direction: c.camera.direction,
        fovy: c.camera.fovy,
        viewportWidth: c.camera.viewport[0],
        viewportHeight: c.camera.viewport[1],
        near: c.camera.near,
      }
      const entities: SelectEntity[] = c.entities.map((e) => ({
        center: e.center,
        radius: e.radius,
        scale: e.scale,
        loaded: e.loaded,
        levels: e.levels.map(([geometricError, bytes]) => ({ geometricError, bytes })),
      }))
      const s = selectLevels(camera, entities, {
        maxScreenSpaceError: c.options.max_screen_space_error,
        hysteresis: c.options.hysteresis,
        memoryBudgetBytes: c.options.memory_budget_bytes,
      })
      expect({ level: s.level, order: s.order, bytes: s.bytes, over_budget: s.overBudget }).toEqual(c.expect)
    })
  }
})

describe('screenSpaceError', () => {
  const camera: Camera = { position: [0, 0, 0], direction: [0, 0, -1], fovy: Math.PI / 2, viewportWidth: 1000, viewportHeight: 1000, near: 0.1 }
  it('is error * height / (2 tan(fovy/2) distance)', () => expect(screenSpaceError(camera, 1, 10)).toBeCloseTo(50, 9))
  it('clamps the distance to near', () => expect(screenSpaceError(camera, 1, 0)).toBeCloseTo(5000, 6))
})
