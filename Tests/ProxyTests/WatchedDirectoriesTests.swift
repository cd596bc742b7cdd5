import Testing
@testable import Proxy

#if canImport(Glibc)
import Glibc
#endif

/// Which directories a reload watches, on real symlink layouts: Kubernetes Secret volumes (flat, items in a
/// subdirectory, and older kubelets' symlinked subdirectory), certbot's live/ links, loops and missing files.
@Suite struct WatchedDirectoriesTests {
    /// A fresh directory whose own path has no links in it (mkdtemp, then realpath), removed after `body`.
    private func inScratch(_ body: (String) -> Void) {
        var template = Array("/tmp/portcullis-watch-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard let made, let resolved = realpath(made, nil) else { Issue.record("mkdtemp failed"); return }
        let root = String(cString: resolved)
        free(resolved)
        body(root)
        removeTree(root)
    }

    private func removeTree(_ path: String) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard info.st_mode & S_IFMT == S_IFDIR else { unlink(path); return }
        if let directory = opendir(path) {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { removeTree("\(path)/\(name)") }
            }
            closedir(directory)
        }
        rmdir(path)
    }

    private func dir(_ path: String) { #expect(mkdir(path, 0o755) == 0) }
    private func file(_ path: String) { let fd = creat(path, 0o644); #expect(fd >= 0); close(fd) }
    private func link(_ target: String, _ path: String) { #expect(symlink(target, path) == 0) }

    @Test func plainFilesWatchOnlyTheirDirectory() {
        inScratch { root in
            file("\(root)/server.pem")
            #expect(watchedDirectories(for: ["\(root)/server.pem", "\(root)/server.key"]) == [root: ["server.pem", "server.key"]])
        }
    }

    @Test func flatSecretVolumeWatchesItsOwnDirectoryForDataLink() {
        // tls.crt -> ..data/tls.crt, ..data -> ..2026_12_03_14_20_01.1
        inScratch { root in
            dir("\(root)/..2026_12_03_14_20_01.1")
            file("\(root)/..2026_12_03_14_20_01.1/tls.crt")
            link("..2026_12_03_14_20_01.1", "\(root)/..data")
            link("..data/tls.crt", "\(root)/tls.crt")
            #expect(watchedDirectories(for: ["\(root)/tls.crt"]) == [root: ["tls.crt", "..data"]])
        }
    }

    @Test func itemsInASubdirectoryWatchTheVolumeRootWhereDataIsSwapped() {
        // tls/tls.crt -> ../..data/tls/tls.crt: the swap happens in the volume root, not in tls/
        inScratch { root in
            dir("\(root)/..2026_12_03_14_20_01.1")
            dir("\(root)/..2026_12_03_14_20_01.1/tls")
            file("\(root)/..2026_12_03_14_20_01.1/tls/tls.crt")
            link("..2026_12_03_14_20_01.1", "\(root)/..data")
            dir("\(root)/tls")
            link("../..data/tls/tls.crt", "\(root)/tls/tls.crt")
            #expect(watchedDirectories(for: ["\(root)/tls/tls.crt"]) == ["\(root)/tls": ["tls.crt"], root: ["..data"]])
        }
    }

    @Test func symlinkedSubdirectoryOfOlderKubeletsWatchesTheVolumeRoot() {
        // tls -> ..data/tls (a link to a directory)
        inScratch { root in
            dir("\(root)/..v1")
            dir("\(root)/..v1/tls")
            file("\(root)/..v1/tls/tls.crt")
            link("..v1", "\(root)/..data")
            link("..data/tls", "\(root)/tls")
            #expect(watchedDirectories(for: ["\(root)/tls/tls.crt"]) == ["\(root)/tls": ["tls.crt"], root: ["tls", "..data"]])
        }
    }

    @Test func absoluteLinksElsewhereAreFollowed() {
        // certbot: /etc/portcullis/server.pem -> /etc/letsencrypt/live/x/fullchain.pem -> ../../archive/x/fullchain3.pem
        inScratch { root in
            for sub in ["etc", "live", "live/x", "archive", "archive/x"] { dir("\(root)/\(sub)") }
            file("\(root)/archive/x/fullchain3.pem")
            link("../../archive/x/fullchain3.pem", "\(root)/live/x/fullchain.pem")
            link("\(root)/live/x/fullchain.pem", "\(root)/etc/server.pem")
            #expect(watchedDirectories(for: ["\(root)/etc/server.pem"])
                    == ["\(root)/etc": ["server.pem"], "\(root)/live/x": ["fullchain.pem"]])
        }
    }

    @Test func missingFilesAndLoopsStillWatchTheirDirectory() {
        inScratch { root in
            link("b", "\(root)/a")
            link("a", "\(root)/b")
            let loop = watchedDirectories(for: ["\(root)/a"])
            #expect(loop[root]?.isSuperset(of: ["a", "b"]) == true)
            #expect(loop.count == 1)
            #expect(watchedDirectories(for: ["\(root)/nothing/here.pem"]) == ["\(root)/nothing": ["here.pem"]])
        }
    }
}
