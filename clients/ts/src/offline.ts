/**
 * The offline copy of one wedding in IndexedDB: the document (y-indexeddb) and, per provider
 * (per tab), a record of its unacknowledged edits and resume position, written before the
 * provider counts an edit as pending.
 *
 * A tab holds a Web Lock named after its record for as long as it lives. A tab that opens the
 * copy adopts the records of tabs that are gone (their lock is free): a page reloaded offline
 * sends the edits the previous page made. Records of tabs still open are theirs to send.
 */

import * as idb from 'lib0/indexeddb'
import { IndexeddbPersistence } from 'y-indexeddb'
import type * as Y from 'yjs'

/** What one tab keeps: the position its document reached and the edits not yet durable. */
export interface OfflineRecord {
  epoch: number
  offset: number
  unacked: Uint8Array[]
}

const RECORD_PREFIX = 'wedsync-client:'
const CUSTOM_STORE = 'custom' // y-indexeddb's store for application keys

interface LockManagerLike {
  request: (name: string, options: { ifAvailable: boolean }, callback: (lock: unknown) => Promise<unknown>) => Promise<unknown>
}

function lockManager (): LockManagerLike | null {
  const locks = (globalThis.navigator as { locks?: LockManagerLike } | undefined)?.locks
  return locks ?? null
}

export class OfflineStore {
  readonly name: string
  private persistence: IndexeddbPersistence
  private readonly key: string
  private releaseLock: (() => void) | null = null
  private writes: Promise<void> = Promise.resolve()
  private readonly adoptedKeys: string[] = []
  private readonly heldLocks: Array<() => void> = []

  /** Start opening the copy for `doc`; `load()` resolves once its content is applied. */
  constructor (name: string, doc: Y.Doc, id: string) {
    this.name = name
    this.key = `${RECORD_PREFIX}${id}`
    this.persistence = new IndexeddbPersistence(name, doc)
  }

  /**
   * Wait until the stored document is applied to `doc`, and return the records this tab
   * adopts: those of tabs that are gone, in no particular order.
   */
  async load (): Promise<OfflineRecord[]> {
    await this.persistence.whenSynced
    await this.holdLock()
    return await this.adoptRecords()
  }

  /** Updates applied by y-indexeddb carry this origin (they are not local edits). */
  get origin (): unknown {
    return this.persistence
  }

  /** Write this tab's record; resolves once it is in IndexedDB. Writes happen in order. */
  async save (record: OfflineRecord): Promise<void> {
    const persistence = this.persistence
    const write = this.writes.then(async () => {
      await persistence.set(this.key, record as unknown as string)
    })
    this.writes = write.catch(() => {})
    await write
  }

  /** The wedding's history was reset: drop the whole copy and start one for `doc`. */
  async replace (doc: Y.Doc): Promise<void> {
    await this.writes
    await this.persistence.destroy()
    await idb.deleteDB(this.name)
    this.persistence = new IndexeddbPersistence(this.name, doc)
    await this.persistence.whenSynced
  }

  destroy (): void {
    void this.persistence.destroy()
    for (const release of this.heldLocks.splice(0)) release()
    this.releaseLock?.()
    this.releaseLock = null
  }

  private async holdLock (): Promise<void> {
    const locks = lockManager()
    if (locks === null) return
    await new Promise<void>((granted) => {
      void locks.request(this.lockName(this.key), { ifAvailable: false }, async () => {
        granted()
        await new Promise<void>((release) => { this.releaseLock = release })
      })
    })
  }

  private lockName (key: string): string {
    return `wedsync-offline:${this.name}:${key}`
  }

  private async recordKeys (): Promise<string[]> {
    const db = this.persistence.db
    if (db === null) return []
    const [custom] = idb.transact(db, [CUSTOM_STORE], 'readonly')
    const keys = await idb.getAllKeys(custom)
    return keys.filter((k): k is string => typeof k === 'string' && k.startsWith(RECORD_PREFIX) && k !== this.key)
  }

  private async adoptRecords (): Promise<OfflineRecord[]> {
    const adopted: OfflineRecord[] = []
    const locks = lockManager()
    for (const key of await this.recordKeys()) {
      const take = async (): Promise<void> => {
        const record = await this.persistence.get(key) as OfflineRecord | undefined
        if (record === undefined) return
        adopted.push(record)
        this.adoptedKeys.push(key)
      }
      if (locks === null) {
        await take() // no Web Locks (old browsers): one tab per wedding is assumed
        continue
      }
      // The gone tab's lock stays held until its record is deleted: no other tab adopts it too.
      await new Promise<void>((done) => {
        void locks.request(this.lockName(key), { ifAvailable: true }, async (lock) => {
          if (lock === null) return done() // that tab is open: its edits are its own
          await take()
          done()
          await new Promise<void>((release) => { this.heldLocks.push(release) })
        })
      })
    }
    return adopted
  }

  /** Delete the adopted records, once this tab's record holds their edits (`save`). */
  async forgetAdopted (): Promise<void> {
    for (const key of this.adoptedKeys.splice(0)) await this.persistence.del(key)
    for (const release of this.heldLocks.splice(0)) release()
  }
}
