// Shared by the unpack fuzzers: after an unpack into `<sandbox>/dest`, nothing may exist in
// the sandbox outside `dest`, and nothing inside `dest` may be a device, fifo or socket, or a
// symlink that leaves it.
use std::path::Path;

pub fn assert_contained(sandbox: &Path, dest: &Path) {
    for entry in std::fs::read_dir(sandbox).expect("read sandbox") {
        let entry = entry.expect("sandbox entry");
        assert_eq!(entry.path(), dest, "an unpack wrote outside its destination");
    }
    walk(dest, dest);
}

fn walk(root: &Path, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let entry = entry.expect("dest entry");
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        let ft = meta.file_type();
        if ft.is_dir() {
            walk(root, &path);
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).expect("read link");
            assert!(target.is_relative(), "absolute symlink {} -> {}", path.display(), target.display());
            let mut depth: i64 = path.parent().expect("parent").strip_prefix(root).expect("inside").components().count() as i64;
            for c in target.components() {
                match c {
                    std::path::Component::ParentDir => depth -= 1,
                    std::path::Component::Normal(_) => depth += 1,
                    _ => {}
                }
                assert!(depth >= 0, "symlink {} -> {} escapes", path.display(), target.display());
            }
        } else {
            use std::os::unix::fs::PermissionsExt as _;
            assert!(ft.is_file(), "special file {}", path.display());
            assert_eq!(meta.permissions().mode() & 0o7000, 0, "setuid/setgid/sticky kept on {}", path.display());
        }
    }
}
