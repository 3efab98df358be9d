require_relative 'helper'

# Processes, descriptors, datagrams, unix sockets and fork.
class TestIo < Test::Unit::TestCase
  include LibemTest

  def test_popen_output_and_exit_status
    out = nil
    status = nil
    em do
      EM.system('sh', '-c', 'echo hello; exit 3') { |o, st| out = o; status = st; EM.stop }
    end
    assert_equal("hello\n", out)
    assert_kind_of(Process::Status, status)
    assert_equal(3, status.exitstatus)
  end

  # Stock's child fails its exec and exits 255; so does this one.
  def test_popen_missing_program_exits_255
    status = nil
    em { EM.system('libem-no-such-program-xyz') { |_o, st| status = st; EM.stop } }
    assert_equal(255, status.exitstatus)
  end

  def test_popen_string_command_and_pid
    pid = nil
    status = nil
    handler = Module.new do
      define_method(:post_init) { pid = get_pid }
      define_method(:unbind) { status = get_status; EM.stop }
    end
    em { EM.popen('true', handler) }
    assert_kind_of(Integer, pid)
    assert_equal(pid, status.pid)
    assert_true(status.success?)
  end

  def test_popen_writes_to_child
    got = +''
    status = nil
    handler = Module.new do
      define_method(:post_init) { send_data("abc\n") }
      define_method(:receive_data) { |d| got << d; close_connection if got == "abc\n" }
      define_method(:unbind) { status = get_status; EM.stop }
    end
    em { EM.popen('cat', handler) }
    assert_equal("abc\n", got)
    assert_true(status.exited?) # closing its stdin ended it
  end

  def test_deferrable_child_process
    out = nil
    em { EM::DeferrableChildProcess.open('echo deferred').callback { |o| out = o; EM.stop } }
    assert_equal("deferred\n", out)
  end

  def test_attach_pipe
    r, w = IO.pipe
    got = +''
    reader = Module.new do
      define_method(:receive_data) { |d| got << d; EM.stop if got.size >= 5 }
    end
    em do
      EM.attach(r, reader)
      w.write('piped')
    end
    assert_equal('piped', got)
  ensure
    w&.close
    r&.close unless r&.closed?
  end

  def test_watch_notify_readable_and_detach
    r, w = IO.pipe
    seen = 0
    watcher = Module.new do
      define_method(:notify_readable) do
        seen += 1
        @io.read_nonblock(100)
        detach
        EM.stop
      end
    end
    em do
      c = EM.watch(r, watcher)
      assert_true(c.watch_only?)
      assert_false(c.notify_readable?)
      c.notify_readable = true
      assert_true(c.notify_readable?)
      w.write('x')
    end
    assert_equal(1, seen)
    assert_false(r.closed?) # a watched IO stays the caller's
  ensure
    w&.close
    r&.close
  end

  def test_watch_notify_writable
    r, w = IO.pipe
    fired = false
    em do
      c = EM.watch(w, Module.new { define_method(:notify_writable) { fired = true; detach; EM.stop } })
      c.notify_writable = true
    end
    assert_true(fired)
  ensure
    w&.close
    r&.close
  end

  def test_attach_refuses_notify_readable_on_data_connection
    not_on_stock('aborts on an uncaught C++ exception')
    r, w = IO.pipe
    em do
      c = EM.attach(r)
      assert_raise(RuntimeError) { c.notify_readable = true }
      c.detach
      EM.stop
    end
  ensure
    w&.close
    r&.close unless r&.closed?
  end

  def test_udp_datagrams_and_reply
    port = free_port
    got = []
    replies = []
    server = Module.new do
      define_method(:receive_data) do |d|
        got << d
        port_, ip = Socket.unpack_sockaddr_in(get_peername)
        send_datagram(d.upcase, ip, port_)
      end
    end
    client = Module.new do
      define_method(:receive_data) { |d| replies << d; EM.stop if replies.size == 2 }
    end
    em do
      EM.open_datagram_socket('127.0.0.1', port, server)
      c = EM.open_datagram_socket('127.0.0.1', 0, client)
      c.send_datagram('one', '127.0.0.1', port)
      c.send_datagram('two', '127.0.0.1', port)
    end
    assert_equal(%w[one two], got)
    assert_equal(%w[ONE TWO], replies)
  end

  def test_unix_socket_echo
    Dir.mktmpdir do |dir|
      path = File.join(dir, 'sock')
      got = +''
      client = Module.new do
        define_method(:connection_completed) { send_data('over unix') }
        define_method(:receive_data) { |d| got << d; close_connection if got.size >= 9 }
        define_method(:unbind) { EM.stop }
      end
      em do
        EM.start_unix_domain_server(path, EchoServer)
        EM.connect_unix_domain(path, client)
      end
      assert_equal('over unix', got)
    end
  end

  def test_fork_reactor
    Dir.mktmpdir do |dir|
      mark = File.join(dir, 'child')
      pid = nil
      em do
        pid = EM.fork_reactor { File.write(mark, 'ran'); EM.stop }
        EM.stop
      end
      _, status = Process.wait2(pid)
      assert_true(status.success?)
      assert_equal('ran', File.read(mark))
    end
  end

  # fork_reactor from a timer: the child lets go of the parent's descriptors
  # at once, so a connection the parent closes reaches its peer's EOF and a
  # server it stops frees the port while the child's reactor still runs.
  def test_fork_reactor_in_timer_releases_parents_descriptors
    peer = TCPServer.new('127.0.0.1', 0)
    up_rd, up_wr = IO.pipe
    go_rd, go_wr = IO.pipe
    port = free_port
    pid = status = nil
    seen = {}
    em(10) do
      sig = EM.start_server('127.0.0.1', port, EchoServer)
      conn = EM.connect('127.0.0.1', peer.addr[1])
      EM.add_timer(0.05) do
        accepted = peer.accept
        pid = EM.fork_reactor do
          up_rd.close
          go_wr.close
          EM.add_timer(0.01) { up_wr.write('u'); up_wr.close }
          EM.add_periodic_timer(0.01) do
            EM.stop unless go_rd.read_nonblock(1, exception: false) == :wait_readable
          end
        end
        up_wr.close
        go_rd.close
        seen[:child_up] = up_rd.read(1)
        conn.close_connection
        EM.add_timer(0.05) do
          seen[:eof] = !accepted.wait_readable(3).nil? &&
                       accepted.read_nonblock(1, exception: false).nil?
          EM.stop_server(sig)
          seen[:rebound] = begin
            TCPServer.new('127.0.0.1', port).close
            true
          rescue SystemCallError => e
            e.class
          end
          seen[:child_alive] = Process.waitpid(pid, Process::WNOHANG).nil?
          go_wr.write('g')
          _, status = Process.wait2(pid)
          accepted.close
          EM.stop
        end
      end
    end
    assert_equal({child_up: 'u', eof: true, rebound: true, child_alive: true}, seen)
    assert_true(status.success?)
  ensure
    peer&.close
    [up_rd, up_wr, go_rd, go_wr].each { |io| io&.close unless io&.closed? }
  end

  def test_fork_inside_running_reactor_then_run_in_child
    port = free_port
    Dir.mktmpdir do |dir|
      mark = File.join(dir, 'child')
      status = nil
      em do
        EM.start_server('127.0.0.1', port, EchoServer)
        EM.add_timer(0.01) do
          pid = fork do
            EM.run { EM.add_timer(0.01) { File.write(mark, 'child ran'); EM.stop } }
            exit!(0)
          end
          _, status = Process.wait2(pid)
          EM.stop
        end
      end
      assert_true(status.success?)
      assert_equal('child ran', File.read(mark))
    end
  end

  def test_watch_file_modified_moved_deleted
    Dir.mktmpdir do |dir|
      path = File.join(dir, 'watched')
      File.write(path, 'a')
      events = []
      watcher = Module.new do
        define_method(:file_modified) { events << :modified }
        define_method(:file_moved) { events << :moved }
        define_method(:file_deleted) { events << :deleted }
        define_method(:unbind) { events << :unbind; EM.stop }
      end
      em do
        EM.watch_file(path, watcher)
        EM.add_timer(0.05) { File.write(path, 'b') }
        EM.add_timer(0.1) { File.rename(path, path + '2') }
        EM.add_timer(0.15) { File.unlink(path + '2') }
      end
      assert_equal(%i[modified moved deleted unbind], events.uniq)
    end
  end

  def test_unwatch_file
    Dir.mktmpdir do |dir|
      path = File.join(dir, 'watched')
      File.write(path, 'a')
      events = []
      em do
        w = EM.watch_file(path, Module.new { define_method(:file_modified) { events << :modified } ; define_method(:unbind) { events << :unbind } })
        w.stop_watching
        EM.add_timer(0.05) { File.write(path, 'b') }
        EM.add_timer(0.15) { EM.stop }
      end
      assert_equal([:unbind], events)
    end
    assert_raise(EM::Unsupported) { em { EM.watch_file('/nonexistent/libem-test') } }
  end

  def test_watch_process_exit
    exited = false
    pid = nil
    em do
      pid = Process.spawn('sleep', '0.1')
      EM.watch_process(pid, Module.new { define_method(:process_exited) { exited = true }; define_method(:unbind) { EM.stop } })
    end
    Process.wait(pid)
    assert_true(exited)
  end

  def test_heartbeat_interval
    old = EM.heartbeat_interval
    EM.heartbeat_interval = 0.5
    assert_in_delta(0.5, EM.heartbeat_interval, 1e-9)
  ensure
    EM.heartbeat_interval = old
  end

  def test_set_effective_user_unknown_raises
    not_on_stock('aborts on an uncaught C++ exception')
    em do
      assert_raise(RuntimeError) { EM.set_effective_user('libem-no-such-user') }
      EM.stop
    end
  end

  def test_set_descriptor_table_size
    n = EM.set_descriptor_table_size
    assert_kind_of(Integer, n)
    assert_operator(n, :>, 0)
  end

  def test_read_keyboard_reads_stdin
    r, w = IO.pipe
    saved = $stdin.dup
    $stdin.reopen(r)
    got = +''
    em do
      EM.open_keyboard(Module.new { define_method(:receive_data) { |d| got << d; EM.stop } })
      w.write("typed\n")
    end
    assert_equal("typed\n", got)
  ensure
    $stdin.reopen(saved) if saved
    w&.close
    r&.close
  end
end
