import Testing
@testable import Proxy

/// The server process's lifecycle: the transitions `ServerRuntime` makes, and impossible ones stopping
/// the process.
@Suite struct ProcessLifecycleTests {
    @Test func startReadyDrainStop() {
        var lifecycle = ProcessLifecycle.created
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
        var lifecycle = ProcessLifecycle.starting
        lifecycle.beginDraining()
        #expect(lifecycle == .draining(exitCode: 0))
        #expect(lifecycle.stop(workerFailed: false) == 0)
    }

    @Test func cutConnectionsExitWithOne() {
        var lifecycle = ProcessLifecycle.running
        lifecycle.beginDraining()
        lifecycle.connectionsCut()
        #expect(lifecycle == .draining(exitCode: 1))
        lifecycle.connectionsCut()  // a second signal after the timeout: still 1
        #expect(lifecycle.stop(workerFailed: false) == 1)
    }

    @Test(arguments: [ProcessLifecycle.starting, .running])
    func aFailedWorkerDrainsWithOne(from state: ProcessLifecycle) {
        var lifecycle = state
        lifecycle.beginDraining(failed: true)
        #expect(lifecycle == .draining(exitCode: 1))
        #expect(lifecycle.stop(workerFailed: true) == 1)
    }

    @Test func aWorkerFailingWhileDrainingExitsWithOne() {
        var lifecycle = ProcessLifecycle.draining(exitCode: 0)
        #expect(lifecycle.stop(workerFailed: true) == 1)
        #expect(lifecycle == .stopped(exitCode: 1))
    }

    @Test func aControlLoopThatCannotBeSetUpStopsWithOne() {
        var lifecycle = ProcessLifecycle.created
        lifecycle.start()
        lifecycle.setupFailed()
        #expect(lifecycle == .stopped(exitCode: 1))
    }

    @Test func descriptionsNameTheState() {
        #expect(ProcessLifecycle.draining(exitCode: 1).description == "draining(exitCode: 1)")
        #expect(ProcessLifecycle.stopped(exitCode: 0).description == "stopped(exitCode: 0)")
    }
}

@Suite struct ProcessLifecycleImpossibleTransitionTests {
    @Test func runningTwiceStopsTheProcess() async {
        await #expect(processExitsWith: .failure) {
            var lifecycle = ProcessLifecycle.created
            lifecycle.start()
            lifecycle.start()
        }
    }

    @Test func readyWhileDrainingStopsTheProcess() async {
        await #expect(processExitsWith: .failure) {
            var lifecycle = ProcessLifecycle.draining(exitCode: 0)
            lifecycle.becomeReady()
        }
    }

    @Test func drainingTwiceStopsTheProcess() async {
        await #expect(processExitsWith: .failure) {
            var lifecycle = ProcessLifecycle.running
            lifecycle.beginDraining()
            lifecycle.beginDraining()
        }
    }

    @Test func stoppingWithoutDrainingStopsTheProcess() async {
        await #expect(processExitsWith: .failure) {
            var lifecycle = ProcessLifecycle.running
            lifecycle.stop(workerFailed: false)
        }
    }
}
