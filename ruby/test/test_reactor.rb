require_relative 'helper'

# The reactor itself: run/stop, timers, next_tick, threads, exceptions.
class TestReactor < Test::Unit::TestCase
  include LibemTest

  def test_extension_is_libems
    not_on_stock('this is the libem check')
    assert_match(/\A\d+\.\d+\.\d+\z/, EventMachine::LIBEM_VERSION)
    assert_equal(100, EM::TimerFired)
    assert_equal(101, EM::ConnectionData)
    assert_equal(102, EM::ConnectionUnbound)
    assert_equal(103, EM::ConnectionAccepted)
    assert_equal(104, EM::ConnectionCompleted)
    assert_equal(105, EM::LoopbreakSignalled)
    assert_true(EM.epoll?)
    assert_false(EM.kqueue?)
    assert_raise(EM::Unsupported) { EM.kqueue = true }
  end

  def test_run_block_and_stop
    ran = false
    em { ran = true; assert_true(EM.reactor_running?); EM.stop; assert_true(EM.stopping?) }
    assert_true(ran)
    assert_false(EM.reactor_running?)
    # and again: release_machine left nothing behind
    em { EM.stop }
  end

  def test_stop_outside_run_raises
    assert_raise(RuntimeError) { EM.stop }
  end

  def test_oneshot_timers_fire_in_order
    order = []
    em do
      EM.add_timer(0.2) { order << 3; EM.stop }
      EM.add_timer(0.05) { order << 1 }
      EM.add_timer(0.1) { order << 2 }
      assert_operator(EM.get_timer_count, :>=, 3)
    end
    assert_equal([1, 2, 3], order)
  end

  def test_timer_waits_its_delay
    t0 = nil
    elapsed = nil
    em { t0 = monotonic; EM.add_timer(0.15) { elapsed = monotonic - t0; EM.stop } }
    assert_operator(elapsed, :>=, 0.14)
    assert_operator(elapsed, :<, 1.0)
  end

  def test_cancel_timer
    fired = false
    em do
      t = EM.add_timer(0.05) { fired = true }
      EM.cancel_timer(t)
      EM.add_timer(0.15) { EM.stop }
    end
    assert_false(fired)
  end

  def test_timer_object_cancel
    fired = false
    em do
      t = EM::Timer.new(0.05) { fired = true }
      t.cancel
      EM.add_timer(0.15) { EM.stop }
    end
    assert_false(fired)
  end

  def test_periodic_timer_and_cancel
    n = 0
    em do
      pt = EM.add_periodic_timer(0.02) do
        n += 1
        if n == 4
          pt.cancel
          EM.add_timer(0.1) { EM.stop }
        end
      end
    end
    assert_equal(4, n)
  end

  def test_next_tick_order
    order = []
    em do
      EM.next_tick { order << 1 }
      EM.next_tick { order << 2; EM.next_tick { order << 3; EM.stop } }
    end
    assert_equal([1, 2, 3], order)
  end

  def test_next_tick_after_stop_is_dropped
    ran = false
    em { EM.next_tick { EM.stop; EM.next_tick { ran = true } } }
    em { EM.next_tick { EM.stop } }
    assert_false(ran)
  end

  # EM.run's own loopbreak for ticks queued before it still comes in the
  # turn that stops (stock reads its loopbreak pipe once a turn).
  def test_ticks_queued_before_run_run_in_stopping_turn
    ran = false
    EM.next_tick { ran = true }
    em { EM.stop }
    assert_true(ran)
  end

  def test_many_loopbreaks_from_threads
    n = 0
    em do
      threads = 4.times.map { Thread.new { 250.times { EM.next_tick { n += 1 } } } }
      EM.add_periodic_timer(0.01) { EM.stop if n == 1000 }
      threads.each(&:join)
    end
    assert_equal(1000, n)
  end

  def test_next_tick_before_run
    ran = false
    EM.next_tick { ran = true; EM.stop }
    em {}
    assert_true(ran)
  end

  # EM.defer runs on Ruby threads; their results come back through
  # signal_loopbreak while the reactor waits without the GVL.
  def test_defer_runs_while_reactor_waits
    result = nil
    em do
      EM.defer(proc { sleep 0.05; 6 * 7 }, proc { |r| result = r; EM.stop })
    end
    assert_equal(42, result)
  end

  def test_other_thread_runs_while_reactor_waits
    count = 0
    worker = nil
    em do
      worker = Thread.new { loop { count += 1; sleep 0.001 } }
      EM.add_timer(0.3) { EM.stop }
    end
    worker.kill
    worker.join
    # A reactor holding the GVL while it waits would leave ~0 iterations.
    assert_operator(count, :>, 20)
  end

  # What web applications do: the reactor on a thread of its own, the main
  # thread handing it work.
  def test_reactor_on_a_background_thread
    q = Queue.new
    t = Thread.new { em { q << :up } }
    assert_equal(:up, q.pop)
    EM.schedule { q << EM.reactor_thread? }
    assert_true(q.pop)
    EM.schedule { EM.stop }
    assert_not_nil(t.join(5))
  end

  def test_schedule_from_another_thread
    got = nil
    em do
      Thread.new { sleep 0.05; EM.schedule { got = Thread.current; EM.stop } }
    end
    assert_equal(Thread.main, got)
  end

  def test_exception_in_timer_propagates_out_of_run
    err = assert_raise(RuntimeError) { em { EM.add_timer(0.01) { raise 'boom' } } }
    assert_equal('boom', err.message)
    assert_false(EM.reactor_running?)
    em { EM.stop } # the next run starts clean
  end

  def test_exception_in_next_tick_propagates
    assert_raise(ArgumentError) { em { EM.next_tick { raise ArgumentError, 'tick' } } }
  end

  # Interrupts reach a reactor that is waiting: Thread#raise from another
  # thread comes out of EM.run.
  def test_thread_raise_wakes_waiting_reactor
    t = Thread.current
    Thread.new { sleep 0.1; t.raise(ArgumentError, 'from thread') }
    err = assert_raise(ArgumentError) { em { EM.add_timer(3) { EM.stop } } }
    assert_equal('from thread', err.message)
    em { EM.stop } # released cleanly
  end

  def test_exit_in_callback_exits_with_status
    ext = File.dirname($LOADED_FEATURES.grep(/rubyeventmachine\.so/).first)
    pid = Process.spawn(RbConfig.ruby, '-I', ext, '-reventmachine', '-e',
                        'EM.run { EM.add_timer(0.05) { exit 3 } }')
    _, st = Process.wait2(pid)
    assert_equal(3, st.exitstatus)
  end

  def test_error_handler_gets_exceptions
    seen = []
    EM.error_handler { |e| seen << e.message }
    em do
      EM.add_timer(0.01) { raise 'handled' }
      EM.add_timer(0.05) { EM.stop }
    end
    assert_equal(['handled'], seen)
  ensure
    EM.instance_variable_get(:@error_handler) && EM.remove_instance_variable(:@error_handler)
  end

  def test_first_exception_wins_and_reactor_stops
    later = false
    err = assert_raise(RuntimeError) do
      em do
        EM.add_timer(0.01) { raise 'first' }
        EM.add_timer(0.3) { later = true }
      end
    end
    assert_equal('first', err.message)
    assert_false(later)
  end

  # The loop's monotonic clock as a Time, as stock gives it: for
  # differences, and it stays put within a callback.
  def test_current_time
    t0 = t1 = same = nil
    em do
      t0 = EM.current_time
      same = EM.current_time == t0
      EM.add_timer(0.2) { t1 = EM.current_time; EM.stop }
    end
    assert_kind_of(Time, t0)
    assert_true(same)
    assert_in_delta(0.2, t1 - t0, 0.15)
  end

  def test_max_timers
    old = EM.get_max_timers
    EM.set_max_timers(100)
    assert_equal(100, EM.get_max_timers)
    assert_raise(RuntimeError) do
      em { 101.times { EM.add_timer(10) {} } }
    end
  ensure
    EM.set_max_timers(old)
  end

  # A count set is honoured exactly: 10 waiting connections take 4 turns
  # at 3 a turn (next_tick runs once a turn).
  def test_simultaneous_accept_count
    not_on_stock('stock reads 10 before a count is set')
    assert_equal(0, EM.get_simultaneous_accept_count)
    EM.set_simultaneous_accept_count(-5)
    assert_equal(1, EM.get_simultaneous_accept_count)
    EM.set_simultaneous_accept_count(3)
    assert_equal(3, EM.get_simultaneous_accept_count)
    per_turn = []
    accepted = 0
    counter = Module.new { define_method(:post_init) { accepted += 1 } }
    socks = []
    em do
      sig = EM.start_server('127.0.0.1', 0, counter)
      port = Socket.unpack_sockaddr_in(EM.get_sockname(sig)).first
      socks = Array.new(10) { TCPSocket.new('127.0.0.1', port) }
      count_turn = lambda do
        per_turn << accepted
        accepted = 0
        per_turn.sum >= 10 ? EM.stop : EM.next_tick(&count_turn)
      end
      EM.next_tick(&count_turn)
    end
    assert_equal([3, 3, 3, 1], per_turn.reject(&:zero?))
  ensure
    socks.each(&:close) if socks
    EM.set_simultaneous_accept_count(1)
  end

  def test_quantum
    not_on_stock('aborts on an uncaught C++ exception for a bad quantum')
    em do
      EM.set_quantum(10)
      assert_raise(RuntimeError) { EM.set_quantum(1) }
      EM.add_timer(0.05) { EM.stop }
    end
  end

  def test_connection_count
    n = nil
    em { n = EM.connection_count; EM.stop }
    assert_equal(0, n)
  end

  def test_run_machine_once
    EM.initialize_event_machine
    EM.instance_variable_set(:@timers, {}) unless EM.instance_variable_get(:@timers)
    assert_true(EM.run_machine_once)
    EM.stop
    assert_false(EM.run_machine_once)
  ensure
    EM.release_machine
  end

  def test_signal_trap_stops_reactor
    em do
      trap('USR1') { EM.stop }
      EM.add_timer(0.05) { Process.kill('USR1', Process.pid) }
    end
    pass = true
    assert_true(pass)
  ensure
    trap('USR1', 'DEFAULT')
  end
end
