import Testing
@testable import Proxy

/// The server process's lifecycle: the transitions `ServerRuntime` makes, and impossible ones stopping
/// the process.
@Suite struct LifecycleTests {
    @Test func startReadyDrainStop() {
        var lifecycle = Lifecycle.created
        #expect(!lifecycle.isShuttingDown)
        lifecycle.start()
        #expect(lifecycle == .starting)
        lifecycle.becomeReady()
        #expect(lifecycle == .running)
        #expect(!lifecycle.isShuttingDown)
        lifecycle.beginDraining()
        #expect(lifecycle == .draining(exitCode: 0))
        #expect(lifecycle.isShuttingDown)
        #expect(lifecycle.stop(workerFailed: false) == 0)
        #expect(lifecycle == .stopped(exitCode: 0))
        #expect(lifecycle.isShuttingDown)
    }

    @Test func drainingBeforeReadyNeverBecomesReady() {
        var lifecycle = Lifecycle.starting
        lifecycle.beginDraining()
        #expect(lifecycle == .draining(exitCode: 0))
        #expect(lifecycle.stop(workerFailed: false) == 0)
    }

    @Test func cutConnectionsExitWithOne() {
        var lifecycle = Lifecycle.running
        lifecycle.beginDraining()
        lifecycle.connectionsCut()
        #expect(lifecycle == .draining(exitCode: 1))
        lifecycle.connectionsCut()  // a second signal after the timeout: still 1
        #expect(lifecycle.stop(workerFailed: false) == 1)
    }

    @Test(arguments: [Lifecycle.starting, .running])
    func aFailedWorkerDrainsWithOne(from state: Lifecycle) {
        var lifecycle = state
        lifecycle.beginDraining(failed: true)
        #expect(lifecycle == .draining(exitCode: 1))
        #expect(lifecycle.stop(workerFailed: true) == 1)
    }

    @Test func aWorkerFailingWhileDrainingExitsWithOne() {
        var lifecycle = Lifecycle.draining(exitCode: 0)
        #expect(lifecycle.stop(workerFailed: true) == 1)
        #expect(lifecycle == .stopped(exitCode: 1))
    }

    @Test func aControlLoopThatCannotBeSetUpStopsWithOne() {
        var lifecycle = Lifecycle.created
        lifecycle.start()
        lifecycle.setupFailed()
        #expect(lifecycle == .stopped(exitCode: 1))
    }

    @Test func descriptionsNameTheState() {
        #expect(Lifecycle.draining(exitCode: 1).description == "draining(exitCode: 1)")
        #expect(Lifecycle.stopped(exitCode: 0).description == "stopped(exitCode: 0)")
    }
}

@Suite struct LifecycleImpossibleTransitionTests {
    @Test func runningTwiceStopsTheProcess() async {
        await #expect(processExitsWith: .failure) {
            var lifecycle = Lifecycle.created
            lifecycle.start()
            lifecycle.start()
        }
    }

    @Test func readyWhileDrainingStopsTheProcess() async {
        await #expect(processExitsWith: .failure) {
            var lifecycle = Lifecycle.draining(exitCode: 0)
            lifecycle.becomeReady()
        }
    }

    @Test func drainingTwiceStopsTheProcess() async {
        await #expect(processExitsWith: .failure) {
            var lifecycle = Lifecycle.running
            lifecycle.beginDraining()
            lifecycle.beginDraining()
        }
    }

    @Test func stoppingWithoutDrainingStopsTheProcess() async {
        await #expect(processExitsWith: .failure) {
            var lifecycle = Lifecycle.running
            lifecycle.stop(workerFailed: false)
        }
    }
}
