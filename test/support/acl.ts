/** POSIX ACLs on real directories, set through libc's setxattr (no setfacl needed). */
import { dlopen, FFIType, ptr } from "bun:ffi";

const ACL_EA_VERSION = 2;
const ACL_UNDEFINED_ID = 0xffffffff;
/** Tags of the entries a minimal ACL holds (acl/libacl.h). */
const USER_OBJ = 0x01;
const GROUP_OBJ = 0x04;
const MASK = 0x10;
const OTHER = 0x20;

/**
 * Gives `dir` a default ACL: what a file created in it may get, in place of
 * the umask. `perms` are the owner's, the group's and the others' (0..7 each).
 */
export function setDefaultAcl(dir: string, perms: { owner: number; group: number; other: number }): void {
  const entries: [number, number][] = [[USER_OBJ, perms.owner], [GROUP_OBJ, perms.group], [MASK, perms.group], [OTHER, perms.other]];
  const value = new Uint8Array(4 + 8 * entries.length);
  const view = new DataView(value.buffer);
  view.setUint32(0, ACL_EA_VERSION, true);
  entries.forEach(([tag, perm], i) => {
    view.setUint16(4 + 8 * i, tag, true);
    view.setUint16(6 + 8 * i, perm, true);
    view.setUint32(8 + 8 * i, ACL_UNDEFINED_ID, true);
  });
  const libc = dlopen("libc.so.6", {
    setxattr: { args: [FFIType.cstring, FFIType.cstring, FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
  });
  try {
    const cstring = (s: string) => ptr(Buffer.from(`${s}\0`));
    const result = libc.symbols.setxattr(cstring(dir), cstring("system.posix_acl_default"), ptr(value), value.length, 0);
    if (result !== 0) throw new Error(`setxattr(${dir}, system.posix_acl_default) failed: the file system may not support ACLs`);
  } finally {
    libc.close();
  }
}
